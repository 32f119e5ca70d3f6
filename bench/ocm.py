"""OCM latency: per-step and whole-day times on the built-in feeders, and HELM vs runpp.

One command: ``python bench/ocm.py [--steps 1440] [--nr-steps 1] [--feeders ...]``.

For paper-test-feeder (2 stations), heimschuh-like (battery + 2 stations) and cigre-lv (battery +
3 stations) it runs ``compute_bands`` (paper objective, defaults: GA population 16, warm start,
SLP polish, certification with every corner and 1000 random points) over ``--steps`` minutes of
the seed-0 day from midnight (1440 = the whole day at 1-minute resolution) and reports the median
and 95th-percentile step latency, the whole-run time, load-flow evaluations per step and the
share of infeasible steps. Then it drives the SAME GA with ``pandapower.runpp`` instead of HELM
(one ``runpp`` per scenario, with pandapower's ``recycle`` option, the fastest way to call it
repeatedly) on ``--nr-steps`` steps per feeder and prints the per-step time ratio runpp / HELM
measured on the same steps in the same run.

Targets (issue 4): median <= 0.5 s per step for feeders up to 50 buses with 4 flexibilities;
a full day (1440 steps) of heimschuh-like <= 10 min on this 2-core machine. Exits 1 if a target
measured in this run fails.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import warnings

import numpy as np
import pandapower as pp

from capacity.feeders import day_profiles, feeder_case, load_feeder, load_pandapower_net
from capacity.ocm import compute_bands

FEEDERS = ("paper-test-feeder", "heimschuh-like", "cigre-lv")
TARGET_MEDIAN_S = 0.5
TARGET_DAY_S = 600.0


class RunppSolver:
    """OCM voltage solver calling ``pandapower.runpp`` once per scenario (one load per bus)."""

    def __init__(self, net: pp.pandapowerNet, bus_ids: np.ndarray) -> None:
        net = copy.deepcopy(net)
        for table in ("load", "sgen", "storage"):
            net[table] = net[table].iloc[0:0]
        self.rows = np.array(
            [pp.create_load(net, int(b), p_mw=0.0, q_mvar=0.0) for b in bus_ids], dtype=int
        )
        self.net = net
        self.bus_ids = np.asarray(bus_ids, dtype=int)
        self.first = True

    def __call__(self, p_kw: np.ndarray, q_kvar: np.ndarray, v_slack_pu: float):
        net = self.net
        net.ext_grid["vm_pu"] = v_slack_pu
        v = np.full(p_kw.shape, np.nan)
        ok = np.zeros(p_kw.shape[0], dtype=bool)
        for i in range(p_kw.shape[0]):  # runpp solves one scenario per call
            net.load.loc[self.rows, "p_mw"] = p_kw[i] / 1000.0
            net.load.loc[self.rows, "q_mvar"] = q_kvar[i] / 1000.0
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    if self.first:
                        pp.runpp(net, numba=False)
                        self.first = False
                    else:
                        pp.runpp(net, numba=False,
                                 recycle={"trafo": False, "gen": False, "bus_pq": True})
                v[i] = net.res_bus.vm_pu.loc[self.bus_ids].to_numpy()
                ok[i] = True
            except pp.LoadflowNotConverged:
                ok[i] = False
        return v, ok


def run_feeder(name: str, n_steps: int, nr_steps: int) -> dict:
    feeder = load_feeder(name)
    case = feeder_case(name)
    prof = day_profiles(name, seed=0)
    flex = case.flexibilities
    minutes = np.arange(n_steps) % 1440
    started = time.perf_counter()
    res = compute_bands(feeder, flex, prof.p_kw[minutes], prof.q_kvar[minutes],
                        v_slack_pu=case.v_slack_pu, seed=0, progress=True)
    total_s = time.perf_counter() - started
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
    }
    if nr_steps > 0:
        # certified steps spread over the run, each run cold (no warm start) by both solvers
        ok = np.flatnonzero(res.feasible)
        ok = ok if ok.size else np.arange(n_steps)
        pick = minutes[ok[np.linspace(0, ok.size - 1, nr_steps + 2).astype(int)[1:-1]]]
        helm = compute_bands(feeder, flex, prof.p_kw[pick], prof.q_kvar[pick],
                             v_slack_pu=case.v_slack_pu, seed=0, warm_start=False)
        runpp_solver = RunppSolver(load_pandapower_net(name), feeder.bus_ids)
        nr = compute_bands(feeder, flex, prof.p_kw[pick], prof.q_kvar[pick],
                           v_slack_pu=case.v_slack_pu, seed=0, warm_start=False,
                           solver=runpp_solver)
        row["helm_step_s"] = float(np.mean(helm.seconds))
        row["runpp_step_s"] = float(np.mean(nr.seconds))
        row["ratio"] = row["runpp_step_s"] / row["helm_step_s"]
        row["band_diff_kw"] = float(max(np.abs(nr.p_max_kw - helm.p_max_kw).max(),
                                        np.abs(nr.p_min_kw - helm.p_min_kw).max()))
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1440, help="minutes per feeder (1440 = day)")
    parser.add_argument("--nr-steps", type=int, default=1, help="steps per feeder with runpp")
    parser.add_argument("--feeders", nargs="+", default=list(FEEDERS), choices=FEEDERS)
    args = parser.parse_args(argv)
    rows = [run_feeder(name, args.steps, args.nr_steps) for name in args.feeders]
    print()
    print(f"{'feeder':<18} {'bus':>4} {'flex':>4} {'steps':>5} {'median s':>9} {'p95 s':>7} "
          f"{'run s':>7} {'day s':>7} {'evals':>6} {'infeas':>6} | {'HELM s':>7} {'runpp s':>8} "
          f"{'ratio':>6}")
    failed = False
    for r in rows:
        nr = (f"{r['helm_step_s']:7.3f} {r['runpp_step_s']:8.2f} {r['ratio']:5.0f}x"
              if "ratio" in r else "")
        print(f"{r['feeder']:<18} {r['buses']:4d} {r['flex']:4d} {r['steps']:5d} "
              f"{r['median_s']:9.3f} {r['p95_s']:7.3f} {r['total_s']:7.1f} {r['day_s']:7.1f} "
              f"{r['evals']:6.0f} {r['infeasible']:6.1%} | {nr}")
        if r["buses"] <= 50 and r["flex"] <= 4 and r["median_s"] > TARGET_MEDIAN_S:
            print(f"FAIL {r['feeder']}: median {r['median_s']:.3f} s > {TARGET_MEDIAN_S} s")
            failed = True
        if r["feeder"] == "heimschuh-like" and r["steps"] >= 1440 and r["total_s"] > TARGET_DAY_S:
            print(f"FAIL heimschuh-like day: {r['total_s']:.0f} s > {TARGET_DAY_S:.0f} s")
            failed = True
        if "band_diff_kw" in r:
            print(f"  {r['feeder']}: largest band difference HELM vs runpp "
                  f"{r['band_diff_kw']:.4f} kW")
    print("targets: median <= 0.5 s/step (<= 50 buses, <= 4 flexibilities); "
          "heimschuh-like day <= 600 s -> " + ("FAIL" if failed else "PASS"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
