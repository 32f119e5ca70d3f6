"""Print the voltage properties the built-in feeders were calibrated for (docs/feeders.md).

``python -m capacity.feeders.calibration [--seeds 5]`` solves every minute of the default day with
HELM for a few fixed flexibility settings and prints one row per feeder and seed. Voltages in pu;
``frac`` columns are shares of the minutes in the named window.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from capacity.feeders import day_profiles, feeder_case, load_feeder
from capacity.helm import solve
from capacity.profiles import DayProfiles

V_LOW, V_HIGH = 0.95, 1.05


def _window(h0: float, h1: float) -> np.ndarray:
    return np.arange(int(60 * h0), int(60 * h1))


def voltages_pu(
    name: str, profiles: DayProfiles, flex_p_kw: Mapping[str, float], minutes: np.ndarray
) -> np.ndarray:
    """|V| (len(minutes), n_bus) by HELM with the flexibilities at fixed powers (kW)."""
    feeder = load_feeder(name)
    p_kw = profiles.p_kw[minutes].copy()
    index = {int(b): i for i, b in enumerate(feeder.bus_ids)}
    for flex in feeder_case(name).flexibilities:
        p_kw[:, index[flex.bus_id]] += float(flex_p_kw.get(flex.name, 0.0))
    res = solve(feeder, p_kw=p_kw, q_kvar=profiles.q_kvar[minutes])
    if not res.converged.all():
        raise RuntimeError(f"{name}: HELM did not converge on some minutes")
    return np.abs(res.v_pu)


def paper_row(seed: int) -> dict[str, float]:
    """paper-test-feeder: the Fig. 7 properties for one seed."""
    name = "paper-test-feeder"
    d = day_profiles(name, seed=seed)
    off, full = {"CS01": 0.0, "CS02": 0.0}, {"CS01": 22.0, "CS02": 22.0}
    allday, day, evening = _window(0, 24), _window(10, 16), _window(17, 22)
    ul01 = d.load_kw[:, 0]
    peak = evening[np.argmax(ul01[evening])]
    p_no_ul02, q_no_ul02 = d.p_kw.copy(), d.q_kvar.copy()
    p_no_ul02[:, 4] = q_no_ul02[:, 4] = 0.0  # UL02 (bus 4) off
    only_ul01 = replace(d, p_kw=p_no_ul02, q_kvar=q_no_ul02)
    return {
        "seed": seed,
        "UL01 peak kW": float(ul01[peak]),
        "Vmin eve peak": float(voltages_pu(name, d, off, np.array([peak])).min()),
        "Vmin eve UL01 only": float(voltages_pu(name, only_ul01, off, np.array([peak])).min()),
        "Vmin day CS off": float(voltages_pu(name, d, off, day).min()),
        "Vmin day CS 2x22 (max over min.)": float(voltages_pu(name, d, full, day).min(1).max()),
        "frac day 2x22 < 0.95": float(np.mean(voltages_pu(name, d, full, allday).min(1) < V_LOW)),
    }


def heimschuh_row(seed: int) -> dict[str, float]:
    """heimschuh-like: the Fig. 10/11 properties for one seed."""
    name = "heimschuh-like"
    d = day_profiles(name, seed=seed)
    off = {"CB": 0.0, "CS01": 0.0, "CS02": 0.0}
    midday, evening = _window(10, 15), _window(17, 22)
    lv = slice(1, None)
    v_mid = voltages_pu(name, d, off, midday)[:, lv].max(1)
    v_mid_inj = voltages_pu(name, d, off | {"CB": -50.0}, midday)[:, lv].max(1)
    v_eve = voltages_pu(name, d, off, evening)[:, lv].min(1)
    v_eve_dis = voltages_pu(name, d, off | {"CB": -50.0}, evening)[:, lv].min(1)
    v_eve_cs = voltages_pu(name, d, off | {"CS01": 22.0, "CS02": 22.0}, evening)[:, lv].min(1)
    return {
        "seed": seed,
        "cloud cover": d.cloud_cover,
        "PV max kW": float(d.pv_kw.sum(1).max()),
        "Vmax mid flex off": float(v_mid.max()),
        "frac mid CB-50 > 1.05": float(np.mean(v_mid_inj > V_HIGH)),
        "Vmin eve flex off": float(v_eve.min()),
        "frac eve flex off < 0.95": float(np.mean(v_eve < V_LOW)),
        "Vmin eve CB-50": float(v_eve_dis.min()),
        "frac eve CS 2x22 < 0.95": float(np.mean(v_eve_cs < V_LOW)),
    }


def cigre_row(seed: int) -> dict[str, float]:
    """cigre-lv: loads alone stay within limits; the stations' bands bind in the evening."""
    name = "cigre-lv"
    d = day_profiles(name, seed=seed)
    lv = np.asarray(load_feeder(name).bus_vn_kv) < 1.0
    allday = _window(0, 24)
    v_off = voltages_pu(name, d, {}, allday)[:, lv]
    v_cs = voltages_pu(name, d, {"CS01": 22.0, "CS02": 22.0, "CS03": 22.0}, allday)[:, lv]
    v_inj = voltages_pu(name, d, {"CB": -50.0}, allday)[:, lv]
    return {
        "seed": seed,
        "Vmin flex off": float(v_off.min()),
        "Vmax flex off": float(v_off.max()),
        "frac 3xCS 22 < 0.95": float(np.mean(v_cs.min(1) < V_LOW)),
        "Vmax CB-50": float(v_inj.max()),
    }


def _print(rows: list[dict[str, float]]) -> None:
    keys = list(rows[0])
    print(" | ".join(keys))
    for row in rows:
        cells = (f"{row[k]:.4g}" if isinstance(row[k], float) else str(row[k]) for k in keys)
        print(" | ".join(cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    print("paper-test-feeder")
    _print([paper_row(s) for s in range(args.seeds)])
    print("\nheimschuh-like")
    _print([heimschuh_row(s) for s in range(args.seeds)])
    print("\ncigre-lv")
    _print([cigre_row(s) for s in range(args.seeds)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
