"""Benchmark: batched HELM load flows per second against pandapower.runpp, same run.

    python bench/helm.py            # CIGRE LV and Kerber Dorfnetz, S = 1, 100, 1000, 10000
    python bench/helm.py --quick    # fewer repetitions

Scenarios are the feeder's loads times independent factors U(0.5, 1.5) per bus (seeded).
pandapower.runpp (Newton-Raphson, default options) solves the same kind of scenarios one by
one. Targets (issue 2): a batch of 1000 at >= 300x runpp's throughput; a single solve <= 0.3 ms
for feeders up to 300 buses. The table also reports the largest voltage difference between
HELM and runpp on the scenarios runpp solved.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
import warnings
from collections.abc import Callable

import numpy as np
import pandapower as pp
import pandapower.networks as pn

from capacity.grid import Feeder
from capacity.helm import solve

NETWORKS: dict[str, Callable[[], pp.pandapowerNet]] = {
    "cigre-lv": pn.create_cigre_network_lv,
    "kerber-dorfnetz": pn.create_kerber_dorfnetz,
}
BATCH_SIZES = (1, 100, 1000, 10000)
TARGET_RATIO_AT_1000 = 300.0
TARGET_SINGLE_MS = 0.3


def scenario_factors(n_scen: int, n_bus: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.5, 1.5, size=(n_scen, n_bus))


def time_runpp(net: pp.pandapowerNet, feeder: Feeder, factors: np.ndarray) -> tuple[float, float]:
    """Seconds per runpp call and the largest |V| difference to HELM on those scenarios."""
    pos = {int(b): i for i, b in enumerate(feeder.bus_ids)}
    load_col = np.array([pos[int(b)] for b in net.load.bus])
    base_scaling = net.load.scaling.to_numpy().copy()
    p = factors * feeder.p_kw
    q = factors * feeder.q_kvar
    helm = solve(feeder, p, q)
    times = []
    max_dv = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runpp(net)  # warm-up
        for s in range(factors.shape[0]):
            net.load["scaling"] = base_scaling * factors[s, load_col]
            start = time.perf_counter()
            pp.runpp(net)
            times.append(time.perf_counter() - start)
            v_nr = net.res_bus.vm_pu.loc[feeder.bus_ids].to_numpy()
            max_dv = max(max_dv, float(np.max(np.abs(np.abs(helm.v_pu[s]) - v_nr))))
    net.load["scaling"] = base_scaling
    return statistics.median(times), max_dv


def time_helm(feeder: Feeder, n_scen: int, min_seconds: float) -> tuple[float, int, bool]:
    """Median seconds per batched solve of ``n_scen`` scenarios, coefficients, all converged."""
    factors = scenario_factors(n_scen, feeder.n_bus, seed=n_scen)
    p, q = factors * feeder.p_kw, factors * feeder.q_kvar
    result = solve(feeder, p, q)  # warm-up (and builds the caches)
    times = []
    spent = 0.0
    while spent < min_seconds or len(times) < 3:
        start = time.perf_counter()
        result = solve(feeder, p, q)
        dt = time.perf_counter() - start
        times.append(dt)
        spent += dt
    return statistics.median(times), result.n_coefficients, bool(result.converged.all())


def single_latency(feeder: Feeder, repeats: int) -> tuple[float, float]:
    """Median and best latency (seconds) of one-scenario solves on varying loads."""
    factors = scenario_factors(repeats, feeder.n_bus, seed=99)
    solve(feeder, factors[0] * feeder.p_kw, factors[0] * feeder.q_kvar)
    times = []
    for s in range(repeats):
        p, q = factors[s] * feeder.p_kw, factors[s] * feeder.q_kvar
        start = time.perf_counter()
        solve(feeder, p, q)
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def main(argv: list[str] | None = None) -> int:
    logging.getLogger("pandapower").setLevel(logging.ERROR)  # "numba not installed" notices
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args(argv)
    n_runpp = 10 if args.quick else 30
    min_seconds = 0.3 if args.quick else 1.0
    n_single = 100 if args.quick else 400

    header = (
        f"{'feeder':<16} {'buses':>5} {'S':>6} {'ms/call':>10} {'flows/s':>10} "
        f"{'runpp/s':>8} {'x runpp':>8} {'coefs':>5} {'conv':>5}"
    )
    print(header)
    print("-" * len(header))
    verdicts = []
    for name, build in NETWORKS.items():
        net = build()
        feeder = Feeder.from_pandapower(net, name=name)
        runpp_s, max_dv = time_runpp(net, feeder, scenario_factors(n_runpp, feeder.n_bus))
        runpp_rate = 1.0 / runpp_s
        for n_scen in BATCH_SIZES:
            t, n_coef, ok = time_helm(feeder, n_scen, min_seconds)
            rate = n_scen / t
            ratio = rate / runpp_rate
            print(
                f"{name:<16} {feeder.n_bus:>5} {n_scen:>6} {t * 1e3:>10.3f} {rate:>10.0f} "
                f"{runpp_rate:>8.1f} {ratio:>8.1f} {n_coef:>5} {ok!s:>5}"
            )
            if n_scen == 1000:
                verdicts.append(
                    f"{name}: S=1000 at {ratio:.0f}x runpp (target >= {TARGET_RATIO_AT_1000:.0f}x)"
                    f" -> {'met' if ratio >= TARGET_RATIO_AT_1000 else 'NOT met'}"
                )
        med, best = single_latency(feeder, n_single)
        print(
            f"{name:<16} {feeder.n_bus:>5} {'single':>6} {med * 1e3:>10.3f} {1 / med:>10.0f} "
            f"{runpp_rate:>8.1f} {runpp_s / med:>8.1f}   (best {best * 1e3:.3f} ms; runpp "
            f"{runpp_s * 1e3:.1f} ms; max |dV| HELM vs runpp {max_dv:.1e} pu)"
        )
        verdicts.append(
            f"{name}: single solve median {med * 1e3:.3f} ms (target <= {TARGET_SINGLE_MS} ms)"
            f" -> {'met' if med * 1e3 <= TARGET_SINGLE_MS else 'NOT met'}"
        )
    print()
    print("\n".join(verdicts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
