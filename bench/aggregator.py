"""Build and solve times of the H-ERM hour model on 20 seeded paper-size instances.

One command: ``python bench/aggregator.py [--instances 20] [--repeats 3]``. Instance ``i`` is
the synthetic paper-size case of seed ``i`` (116 DG, 7 ESS, 5 CS, 90 loads; 104 binaries) with
an hourly demand forecast error N(0, 10%) and RES error N(0, 15%), hour ``(7 i + 3) mod 24``,
the ESS/CS deviation caps of Table 1 on odd seeds. Per instance each time is the best of
``--repeats`` runs (the machine is shared; best-of damps other processes), then the table gives
the median and the worst over the instances for:

- model build (``build_model``: sparse assembly of c, A, bounds, integrality);
- ``scipy.optimize.milp(**result.milp)`` with its defaults (the peer);
- this project's solve path (LP relaxation first, integral-feasibility check, MILP only if
  needed, explicit mip_rel_gap 1e-7 and time limit);
- for information, the project's MILP branch alone (``lp_first=False``), i.e. the time when the
  relaxation is not integral-feasible.

Targets from issue 6: median solve <= 57 ms (the paper's CPLEX time on its hardware), worst
<= 250 ms; the script prints PASS/FAIL and exits 1 if a target fails. The two solvers' optimal
costs are compared too (max relative difference).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from scipy.optimize import milp

from market.aggregator import ModelOptions, synthetic_case
from market.aggregator.model import build_model
from market.aggregator.schedule import hour_horizon
from market.aggregator.solve import SolverOptions, solve_model

TARGET_MEDIAN_S = 0.057
TARGET_WORST_S = 0.250


def instance(seed: int):
    """(case, hour, options) of bench instance ``seed``."""
    rng = np.random.default_rng(1000 + seed)
    case = synthetic_case(seed).with_disturbance(demand_pct=rng.normal(0, 10, 24),
                                                 res_pct=rng.normal(0, 15, 24))
    options = (ModelOptions(ess_cap_frac=0.10, cs_cap_frac=0.05) if seed % 2
               else ModelOptions())
    return case, (7 * seed + 3) % 24, options


def best_of(repeats: int, fn, *args, **kwargs):
    """(best wall time in s, last result) of ``fn(*args, **kwargs)`` over ``repeats`` runs."""
    best, out = np.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    build_s, scipy_s, ours_s, branch_s, rel_diff, methods, sizes = [], [], [], [], [], [], set()
    print(f"preparing {args.instances} instances (synthetic case + day-ahead plan each) ...")
    for seed in range(args.instances):
        case, hour, options = instance(seed)
        hz = hour_horizon(case, hour, options)
        t_build, model = best_of(args.repeats, build_model, case, hz, options)
        sizes.add((model.n_vars, model.n_binaries, model.n_constraints))
        t_scipy, res = best_of(args.repeats, milp, **model.milp_kwargs())
        t_ours, (_, fun, stats) = best_of(args.repeats, solve_model, model, SolverOptions())
        t_branch, (_, fun_branch, _) = best_of(args.repeats, solve_model, model,
                                               SolverOptions(lp_first=False))
        if res.status != 0:
            print(f"instance {seed}: scipy.milp status {res.status}: {res.message}")
            return 1
        build_s.append(t_build)
        scipy_s.append(t_scipy)
        ours_s.append(t_ours)
        branch_s.append(t_branch)
        rel_diff.append(max(abs(fun - res.fun), abs(fun_branch - res.fun)) / max(1.0, abs(res.fun)))
        methods.append(stats.method)
    build, peer, ours, branch = (np.array(v) * 1000 for v in (build_s, scipy_s, ours_s,
                                                              branch_s))
    print(f"\nH-ERM hour model, {args.instances} instances, best of {args.repeats} runs each")
    print("model sizes (variables, binaries, constraints):",
          ", ".join(str(s) for s in sorted(sizes)))
    print(f"solve path used: {methods.count('lp-integral')} LP-integral, "
          f"{methods.count('milp')} MILP; max relative cost difference to scipy.milp "
          f"{max(rel_diff):.2e}\n")
    header = f"{'what':38s} {'median ms':>10s} {'worst ms':>10s} {'ratio vs scipy.milp':>20s}"
    print(header)
    print("-" * len(header))
    print(f"{'model build (sparse assembly)':38s} {np.median(build):10.2f} {build.max():10.2f}"
          f" {'':>20s}")
    print(f"{'scipy.milp defaults (peer)':38s} {np.median(peer):10.2f} {peer.max():10.2f}"
          f" {'1.00':>20s}")
    print(f"{'project solve path':38s} {np.median(ours):10.2f} {ours.max():10.2f}"
          f" {np.median(ours) / np.median(peer):20.2f}")
    print(f"{'project MILP branch only (info)':38s} {np.median(branch):10.2f} "
          f"{branch.max():10.2f} {np.median(branch) / np.median(peer):20.2f}")
    print(f"{'build + project solve':38s} {np.median(build + ours):10.2f} "
          f"{(build + ours).max():10.2f}")
    ok_median = np.median(ours) / 1000 <= TARGET_MEDIAN_S
    ok_worst = ours.max() / 1000 <= TARGET_WORST_S
    print(f"\ntarget median solve <= {TARGET_MEDIAN_S * 1000:.0f} ms (paper, CPLEX): "
          f"{'PASS' if ok_median else 'FAIL'}")
    print(f"target worst solve <= {TARGET_WORST_S * 1000:.0f} ms: "
          f"{'PASS' if ok_worst else 'FAIL'}")
    return 0 if ok_median and ok_worst else 1


if __name__ == "__main__":
    sys.exit(main())
