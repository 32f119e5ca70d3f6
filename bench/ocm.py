"""OCM latency: per-step and whole-day times on the built-in feeders, and HELM vs runpp.

One command: ``python bench/ocm.py [--steps 1440] [--nr-steps 1] [--feeders ...]``.

For paper-test-feeder (2 stations), heimschuh-like (battery + 2 stations) and cigre-lv (battery +
3 stations) it runs ``compute_bands`` (paper objective, defaults: GA population 16, warm start,
SLP polish, certification with every corner and 1000 random points, voltage limits and thermal
limits of 100 % on every line and transformer) over ``--steps`` minutes of the seed-0 day from
midnight (1440 = the whole day at 1-minute resolution) and reports the median and
95th-percentile step latency, the whole-run time, load-flow evaluations per step, the share of
infeasible steps, the share of HELM time spent computing branch loadings (``load%``), the
highest loading in any certified box and the steps where a line or transformer binds. Then it
drives the SAME GA with pandapower's Newton-Raphson instead of HELM (``capacity.nr_check``: one
``runpp`` per scenario with pandapower's ``recycle`` option, the fastest way to call it
repeatedly) on ``--nr-steps`` steps per feeder and prints the per-step time ratio runpp / HELM
measured on the same steps in the same run.

``--ga-contribution`` instead measures what the DEAP GA adds under the band policy of issue 16
(``capacity.ocm.policy``) where the chargers' operating sets ``{0} u [4.14 kW, rating]`` make
the problem non-convex: the evening steps where not every station can have its guaranteed
minimum (``partial-guarantee``; the uncontrollable load scaled up on heimschuh-like and cigre-lv
to create them), each solved cold by the default GA + polish, by the polish alone (the GA's
first population, no generation: ``max_generations=0``), by the polish from the seeds only (a
population of 4: the box corners and the seeds, no random individuals) and by a long GA (64 x
40) as the reference. Per variant: the stations' summed P_max (the served power), its gap to the
best variant per step, how many steps fall short by more than 0.01 kW, and the optimiser's
load flows per step (certification off: ``n_random=0``, the corners only).

Targets (issues 4 and 15): median <= 0.5 s per step for feeders up to 50 buses with 4
flexibilities; a full day (1440 steps) of heimschuh-like <= 10 min on this 2-core machine;
loadings <= 10 % of the HELM time. Exits 1 if a target measured in this run fails.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from capacity.feeders import day_profiles, feeder_case, load_feeder, load_pandapower_net
from capacity.flexibility import FlexibilityKind
from capacity.grid import Feeder
from capacity.helm import solve
from capacity.nr_check import NewtonRaphson
from capacity.ocm import BandPolicy, GaSettings, compute_bands
from capacity.ocm.result import RATING

FEEDERS = ("paper-test-feeder", "heimschuh-like", "cigre-lv")
TARGET_MEDIAN_S = 0.5
TARGET_DAY_S = 600.0
TARGET_LOADING_SHARE = 0.10
#: (feeder, load scale) of the GA-contribution cases: evening steps every 10 min, 17:00-23:00.
GA_CASES = (("paper-test-feeder", 1.0), ("heimschuh-like", 1.6), ("heimschuh-like", 1.8),
            ("cigre-lv", 1.2), ("cigre-lv", 1.35), ("cigre-lv", 1.5))
GA_VARIANTS = {
    "GA + polish": GaSettings(),
    "polish alone": GaSettings(max_generations=0),
    "seeds + polish": GaSettings(population=4, max_generations=0),
    "long GA (ref)": GaSettings(population=64, max_generations=40, patience=10),
}


class TimedHelm:
    """The default OCM solver (HELM with branch loadings) timing the loadings separately."""

    def __init__(self, feeder: Feeder) -> None:
        self.feeder = feeder
        self.solve_s = 0.0
        self.loading_s = 0.0

    def __call__(self, p_kw: np.ndarray, q_kvar: np.ndarray, v_slack_pu: float):
        started = time.perf_counter()
        res = solve(self.feeder, p_kw=p_kw, q_kvar=q_kvar, v_slack_pu=v_slack_pu)
        solved = time.perf_counter()
        loading = res.branch_loading_pct
        self.solve_s += solved - started
        self.loading_s += time.perf_counter() - solved
        return np.abs(res.v_pu), res.converged, loading


def run_feeder(name: str, n_steps: int, nr_steps: int) -> dict:
    feeder = load_feeder(name)
    case = feeder_case(name)
    prof = day_profiles(name, seed=0)
    flex = case.flexibilities
    minutes = np.arange(n_steps) % 1440
    helm = TimedHelm(feeder)
    started = time.perf_counter()
    res = compute_bands(feeder, flex, prof.p_kw[minutes], prof.q_kvar[minutes],
                        v_slack_pu=case.v_slack_pu, seed=0, progress=True, solver=helm)
    total_s = time.perf_counter() - started
    thermal = [b for b in res.binding_min + res.binding_max
               if b not in ("v_low", "v_high", RATING)]
    row = {
        "feeder": name,
        "buses": feeder.n_bus,
        "flex": len(flex),
        "steps": n_steps,
        "median_s": float(np.median(res.seconds)),
        "p95_s": float(np.percentile(res.seconds, 95)),
        "total_s": total_s,
        "evals": float(np.mean(res.n_evaluations)),
        "infeasible": float(np.mean(~res.feasible)),
        "day_s": total_s * 1440 / n_steps,
        "loading_share": helm.loading_s / helm.solve_s,
        "max_loading_pct": float(np.nanmax(res.loading_box_max_pct)),
        "thermal_binds": len(thermal),
        "thermal_branches": sorted(set(thermal)),
    }
    if nr_steps > 0:
        # certified steps spread over the run, each run cold (no warm start) by both solvers
        ok = np.flatnonzero(res.feasible)
        ok = ok if ok.size else np.arange(n_steps)
        pick = minutes[ok[np.linspace(0, ok.size - 1, nr_steps + 2).astype(int)[1:-1]]]
        helm = compute_bands(feeder, flex, prof.p_kw[pick], prof.q_kvar[pick],
                             v_slack_pu=case.v_slack_pu, seed=0, warm_start=False)
        runpp_solver = NewtonRaphson(feeder, load_pandapower_net(name))
        nr = compute_bands(feeder, flex, prof.p_kw[pick], prof.q_kvar[pick],
                           v_slack_pu=case.v_slack_pu, seed=0, warm_start=False,
                           solver=runpp_solver)
        row["helm_step_s"] = float(np.mean(helm.seconds))
        row["runpp_step_s"] = float(np.mean(nr.seconds))
        row["ratio"] = row["runpp_step_s"] / row["helm_step_s"]
        row["band_diff_kw"] = float(max(np.abs(nr.p_max_kw - helm.p_max_kw).max(),
                                        np.abs(nr.p_min_kw - helm.p_min_kw).max()))
    return row


def _check_targets(r: dict) -> list[str]:
    """The targets this row fails, as messages."""
    fails = []
    if r["buses"] <= 50 and r["flex"] <= 4 and r["median_s"] > TARGET_MEDIAN_S:
        fails.append(f"{r['feeder']}: median {r['median_s']:.3f} s > {TARGET_MEDIAN_S} s")
    if r["feeder"] == "heimschuh-like" and r["steps"] >= 1440 and r["total_s"] > TARGET_DAY_S:
        fails.append(f"heimschuh-like day: {r['total_s']:.0f} s > {TARGET_DAY_S:.0f} s")
    if r["loading_share"] > TARGET_LOADING_SHARE:
        fails.append(f"{r['feeder']}: loadings {r['loading_share']:.1%} of the HELM time")
    return fails


def ga_contribution(name: str, scale: float) -> dict[str, np.ndarray] | None:
    """Served station power (T,) kW and load flows per step (T,) of every ``GA_VARIANTS`` entry
    on the case's ``partial-guarantee`` steps; None when the case has none."""
    feeder, case = load_feeder(name), feeder_case(name)
    prof = day_profiles(name, seed=0)
    minutes = np.arange(17 * 60, 23 * 60, 10)
    p_kw, q_kvar = scale * prof.p_kw[minutes], scale * prof.q_kvar[minutes]
    kw = {"v_slack_pu": case.v_slack_pu, "seed": 0, "objective": "fair", "policy": BandPolicy()}
    probe = compute_bands(feeder, case.flexibilities, p_kw, q_kvar, n_random=0, **kw)
    pick = np.flatnonzero(["partial-guarantee" in n for n in probe.notes])
    if pick.size == 0:
        return None
    station = np.array([f.kind == FlexibilityKind.CHARGING_STATION for f in case.flexibilities])
    out = {}
    for label, ga in GA_VARIANTS.items():
        res = compute_bands(feeder, case.flexibilities, p_kw[pick], q_kvar[pick], n_random=0,
                            ga=ga, warm_start=False, **kw)
        out[label] = res.p_max_kw[:, station].sum(axis=1)
        out[label + " flows"] = res.n_evaluations.astype(float)
    return out


def print_ga_contribution() -> None:
    """The GA-contribution table (module docstring)."""
    print(f"{'case':<24} {'steps':>5} " + " | ".join(f"{v:>30}" for v in GA_VARIANTS))
    print(f"{'':<24} {'':>5} " + " | ".join(
        f"{'served kW':>9} {'gap %':>6} {'short':>5} {'flows':>6}" for _ in GA_VARIANTS))
    for name, scale in GA_CASES:
        out = ga_contribution(name, scale)
        if out is None:
            print(f"{name} x{scale:<10} no partial-guarantee step")
            continue
        best = np.max([out[v] for v in GA_VARIANTS], axis=0)
        cells = []
        for v in GA_VARIANTS:
            gap = best - out[v]
            cells.append(f"{out[v].sum():9.1f} {100 * gap.sum() / best.sum():6.2f} "
                         f"{int((gap > 0.01).sum()):5d} {out[v + ' flows'].mean():6.0f}")
        print(f"{name + ' x' + str(scale):<24} {best.size:5d} " + " | ".join(cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1440, help="minutes per feeder (1440 = day)")
    parser.add_argument("--nr-steps", type=int, default=1, help="steps per feeder with runpp")
    parser.add_argument("--feeders", nargs="+", default=list(FEEDERS), choices=FEEDERS)
    parser.add_argument("--ga-contribution", action="store_true",
                        help="only the GA-contribution table of the band policy")
    args = parser.parse_args(argv)
    if args.ga_contribution:
        print_ga_contribution()
        return 0
    rows = [run_feeder(name, args.steps, args.nr_steps) for name in args.feeders]
    print()
    print(f"{'feeder':<18} {'bus':>4} {'flex':>4} {'steps':>5} {'median s':>9} {'p95 s':>7} "
          f"{'run s':>7} {'day s':>7} {'evals':>6} {'infeas':>6} {'load%':>6} {'max L%':>7} | "
          f"{'HELM s':>7} {'runpp s':>8} {'ratio':>6}")
    fails = []
    for r in rows:
        nr = (f"{r['helm_step_s']:7.3f} {r['runpp_step_s']:8.2f} {r['ratio']:5.0f}x"
              if "ratio" in r else "")
        print(f"{r['feeder']:<18} {r['buses']:4d} {r['flex']:4d} {r['steps']:5d} "
              f"{r['median_s']:9.3f} {r['p95_s']:7.3f} {r['total_s']:7.1f} {r['day_s']:7.1f} "
              f"{r['evals']:6.0f} {r['infeasible']:6.1%} {r['loading_share']:6.1%} "
              f"{r['max_loading_pct']:7.1f} | {nr}")
        fails += _check_targets(r)
    for r in rows:
        print(f"  {r['feeder']}: a line or transformer binds on {r['thermal_binds']} band sides "
              f"{r['thermal_branches']}"
              + (f"; largest band difference HELM vs runpp {r['band_diff_kw']:.4f} kW"
                 if "band_diff_kw" in r else ""))
    for msg in fails:
        print(f"FAIL {msg}")
    print("targets: median <= 0.5 s/step (<= 50 buses, <= 4 flexibilities); "
          "heimschuh-like day <= 600 s; loadings <= 10 % of HELM time -> "
          + ("FAIL" if fails else "PASS"))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
