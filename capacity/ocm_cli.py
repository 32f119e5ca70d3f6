"""``gridshare ocm``: certified OCM bands of a built-in feeder over a day, as CSV, JSON and PNG.

The feeder's seeded minute day profile (``capacity.feeders.day_profiles``) gives the
uncontrollable net consumption; with ``--step-min`` > 1 each step uses the mean of its minutes.
Bands keep voltages in ``--v-low..--v-high`` and every rated line and transformer at most at
``--max-line-loading-pct`` / ``--max-trafo-loading-pct`` (default 100 %).
Writes ``bands.csv`` (one row per step), ``bands.json`` (metadata and arrays) and the paper's
figures ``bands.png`` (Fig. 7/10), ``voltages.png`` (Fig. 7b/11d), ``voltage_boxplots.png``
(Fig. 8/11) into ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from capacity.ocm import OBJECTIVES, BandPolicy, BandResult, compute_bands

MINUTES_PER_DAY = 1440


def add_commands(subparsers: Any) -> None:
    """Register ``gridshare ocm``."""
    p = subparsers.add_parser(
        "ocm",
        help="certified OCM bands per flexibility for a built-in feeder (CSV, JSON, PNG)",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--feeder", required=True, help="built-in feeder name")
    p.add_argument("--hours", type=float, default=24.0, help="hours to compute (default 24)")
    p.add_argument("--step-min", type=int, default=1, help="step length in minutes (default 1)")
    p.add_argument("--start-hour", type=float, default=0.0, help="first hour of day (default 0)")
    p.add_argument("--objective", choices=OBJECTIVES, default=None,
                   help="sum (paper Eq. 2-3, the default), two-step (Eq. 15-16) or fair "
                   "(max-min share; the default with --band-policy)")
    p.add_argument("--band-policy", action="store_true",
                   help="the product band policy (capacity.ocm.policy, docs/ocm.md): no station "
                   "forced on, 4.2 kW guaranteed per station, then a fair share; needs "
                   "objective fair")
    p.add_argument("--seed", type=int, default=0, help="profile and GA seed (default 0)")
    p.add_argument("--n-random", type=int, default=1000,
                   help="random certification points per step (default 1000)")
    p.add_argument("--v-low", type=float, default=0.95, help="lower voltage limit (pu)")
    p.add_argument("--v-high", type=float, default=1.05, help="upper voltage limit (pu)")
    p.add_argument("--max-line-loading-pct", type=float, default=100.0,
                   help="loading limit of every rated line, percent of its rating (default 100)")
    p.add_argument("--max-trafo-loading-pct", type=float, default=100.0,
                   help="loading limit of every transformer, percent of sn_mva (default 100)")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.set_defaults(func=run_ocm)


def step_windows(start_hour: float, hours: float, step_min: int) -> np.ndarray:
    """First minute of every step (ValueError if the window leaves the day)."""
    if step_min < 1:
        raise ValueError(f"--step-min must be >= 1, got {step_min}")
    if hours <= 0:
        raise ValueError(f"--hours must be > 0, got {hours}")
    start = round(start_hour * 60)
    n_steps = round(hours * 60) // step_min
    if start < 0 or n_steps < 1 or start + n_steps * step_min > MINUTES_PER_DAY:
        raise ValueError(
            f"--start-hour {start_hour} and --hours {hours} must stay within one day (0..24 h) "
            f"with at least one step of {step_min} min"
        )
    return start + step_min * np.arange(n_steps)


def step_means(values: np.ndarray, starts: np.ndarray, step_min: int) -> np.ndarray:
    """Mean of ``values`` (1440, n) over each step's minutes -> (T, n)."""
    idx = starts[:, None] + np.arange(step_min)[None, :]
    return values[idx].mean(axis=1)


def result_rows(result: BandResult, starts: np.ndarray, ul_sum_kw: np.ndarray) -> list[dict]:
    """One CSV row per step."""
    rows = []
    for k, minute in enumerate(starts):
        row: dict[str, Any] = {
            "step": k,
            "minute": int(minute),
            "time": f"{int(minute) // 60:02d}:{int(minute) % 60:02d}",
            "feasible": bool(result.feasible[k]),
            "violation_pu": float(result.violation_pu[k]),
            "v_min_at_max_pu": float(result.v_min_at_max_pu[k]),
            "v_max_at_min_pu": float(result.v_max_at_min_pu[k]),
            "ul_sum_kw": float(ul_sum_kw[k]),
        }
        for i, flex in enumerate(result.flexibilities):
            row[f"{flex.name}_p_min_kw"] = float(result.p_min_kw[k, i])
            row[f"{flex.name}_p_max_kw"] = float(result.p_max_kw[k, i])
        box_max = result.loading_box_max_pct[k]
        rated = box_max[np.isfinite(box_max)]
        row["max_loading_pct"] = float(rated.max()) if rated.size else float("nan")
        row["binding_min"] = result.binding_min[k]
        row["binding_max"] = result.binding_max[k]
        row["note"] = result.notes[k]
        rows.append(row)
    return rows


def run_ocm(args: argparse.Namespace) -> int:
    """Compute, write and summarise the bands; returns the exit code."""
    from capacity.feeders import day_profiles, feeder_case, load_feeder

    case = feeder_case(args.feeder)
    feeder = load_feeder(args.feeder)
    flexibilities = tuple(feeder.flexibilities) or tuple(case.flexibilities)
    if not flexibilities:
        raise ValueError(f"feeder {args.feeder!r} has no flexibilities")
    policy = BandPolicy() if args.band_policy else None
    objective = args.objective or ("fair" if policy is not None else "sum")
    starts = step_windows(args.start_hour, args.hours, args.step_min)
    prof = day_profiles(args.feeder, seed=args.seed)
    p_kw = step_means(prof.p_kw, starts, args.step_min)
    q_kvar = step_means(prof.q_kvar, starts, args.step_min)
    started = time.perf_counter()
    result = compute_bands(
        feeder, flexibilities, p_kw, q_kvar, v_slack_pu=case.v_slack_pu, v_low=args.v_low,
        v_high=args.v_high, objective=objective, seed=args.seed, n_random=args.n_random,
        progress=True, policy=policy, max_line_loading_pct=args.max_line_loading_pct,
        max_trafo_loading_pct=args.max_trafo_loading_pct,
    )
    elapsed = time.perf_counter() - started
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    ul_sum_kw = p_kw.sum(axis=1)
    rows = result_rows(result, starts, ul_sum_kw)
    with (out / "bands.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    doc = {
        "feeder": args.feeder,
        "objective": objective,
        "band_policy": None if policy is None else policy.as_dict(),
        "seed": args.seed,
        "date": str(prof.time[0].date()),
        "step_min": args.step_min,
        "start_minute": int(starts[0]),
        "v_slack_pu": case.v_slack_pu,
        "v_low_pu": args.v_low,
        "v_high_pu": args.v_high,
        "max_line_loading_pct": args.max_line_loading_pct,
        "max_trafo_loading_pct": args.max_trafo_loading_pct,
        "n_random": args.n_random,
        "flexibilities": [
            {"name": f.name, "bus_id": f.bus_id, "kind": f.kind.value,
             "p_low_kw": f.p_low_kw, "p_high_kw": f.p_high_kw}
            for f in flexibilities
        ],
        "runtime_s": elapsed,
        "steps": rows,
    }
    (out / "bands.json").write_text(json.dumps(doc, indent=1))
    written = ["bands.csv", "bands.json"]
    if not args.no_figures:
        from capacity import ocm_figures

        hours = starts / 60.0
        ocm_figures.plot_bands(result, hours, ul_sum_kw, out / "bands.png")
        ocm_figures.plot_voltages(result, hours, out / "voltages.png")
        ocm_figures.plot_voltage_boxplots(result, hours, out / "voltage_boxplots.png")
        written += ["bands.png", "voltages.png", "voltage_boxplots.png"]
    n_bad = int((~result.feasible).sum())
    print(
        f"{args.feeder}: {result.n_steps} steps of {args.step_min} min ({objective}) in "
        f"{elapsed:.1f} s, median {np.median(result.seconds):.3f} s/step; "
        f"{n_bad} infeasible step(s)"
        + (f", worst violation {result.violation_pu.max():.4f} pu" if n_bad else "")
    )
    print(f"wrote {', '.join(written)} to {out}")
    return 0
