"""``gridshare aggregator``: the H-ERM test cases of Table 1 on the synthetic paper-size case.

``gridshare aggregator --case 1..5 [--disturbance PCT] [--seed S] [--lookahead H] [--out DIR]``
rolls the day hour by hour for each disturbance level (all ten of Table 1 unless --disturbance
is given), prints the day-ahead vs hour-ahead costs and writes figures in the style of Fig. 4-7
and a JSON table into DIR.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from market.aggregator.experiments import DISTURBANCES_PCT, Table1Row, run_day, table1, test_case
from market.aggregator.synthetic import synthetic_case

COUNTERPART = {1: 2, 2: 1, 3: 4, 4: 3}


def _print_rows(number: int, rows: list[Table1Row]) -> None:
    print(f"case {number}: disturbance  day-ahead EUR  hour-ahead EUR  variation %  "
          f"cap penalty EUR  cap-binding hours")
    for r in rows:
        print(f"  {r.disturbance_pct:+6.0f}%  {r.day_ahead_cost_eur:13.2f}  "
              f"{r.hour_ahead_cost_eur:14.2f}  {r.difference_pct:+11.2f}  "
              f"{r.cap_penalty_eur:15.2f}  {list(r.cap_binding_hours)}")


def run(args: argparse.Namespace) -> int:
    """Run test case ``args.case``; returns the exit code."""
    from market.aggregator import figures  # matplotlib only when the command runs

    tc = test_case(args.case)
    if args.lookahead < 0:
        raise ValueError("--lookahead must be non-negative")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    case = synthetic_case(args.seed)
    written: list[Path] = []
    if tc.number == 5:
        day = run_day(case, tc, 0.0, seed=args.seed, lookahead_h=args.lookahead)
        totals = {k: float(np.sum(v) * case.slot_h / 1000.0) for k, v in day.p_kw.items()}
        print(f"case 5: day cost {day.day_cost_eur:.2f} EUR (day-ahead "
              f"{case.day_ahead.cost_eur:.2f} EUR), all hours optimal: {day.all_hours_optimal}")
        for key, mwh in totals.items():
            print(f"  {key:10s} {mwh:9.2f} MWh")
        written.append(figures.energy_per_resource(day, case.slot_h, out / "fig7_case5.png"))
        (out / "case5.json").write_text(json.dumps(
            {"day_cost_eur": day.day_cost_eur, "day_ahead_cost_eur": case.day_ahead.cost_eur,
             "energy_mwh": totals, "cap_binding_hours": day.cap_binding_hours}, indent=2))
    else:
        levels = (args.disturbance,) if args.disturbance is not None else DISTURBANCES_PCT
        rows = {n: table1(case, n, levels, args.lookahead) for n in (tc.number,
                                                                      COUNTERPART[tc.number])}
        for n in sorted(rows):
            _print_rows(n, rows[n])
        cons, free = (1, 2) if tc.disturbed == "demand" else (3, 4)
        fig_no = 4 if tc.disturbed == "demand" else 5
        written.append(figures.cost_comparison(rows[cons], rows[free], tc.disturbed,
                                               (cons, free), out / f"fig{fig_no}_cases{cons}"
                                                                   f"_{free}.png"))
        written.append(figures.constrained_vs_not(
            {f"{tc.disturbed} (case {cons} vs {free})": (rows[cons], rows[free])},
            out / f"fig6_cases{cons}_{free}.png"))
        day = run_day(case, tc, levels[-1], lookahead_h=args.lookahead)
        written.append(figures.energy_per_resource(
            day, case.slot_h, out / f"fig7_case{tc.number}_{levels[-1]:+g}pct.png"))
        (out / f"table1_case{tc.number}.json").write_text(json.dumps(
            {str(n): [dataclasses.asdict(r) for r in rows[n]] for n in rows}, indent=2))
    for path in written:
        print(f"wrote {path}")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``gridshare aggregator``."""
    p = subparsers.add_parser(
        "aggregator", help="hour-ahead aggregator (H-ERM): reproduce the paper's Table 1 cases",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--case", type=int, required=True, choices=range(1, 6), metavar="1..5",
                   help="Table 1 test case")
    p.add_argument("--disturbance", type=float, default=None, metavar="PCT",
                   help="one disturbance level in %% (default: all of -25..+25)")
    p.add_argument("--seed", type=int, default=0, help="synthetic case seed (default 0)")
    p.add_argument("--lookahead", type=int, default=0, metavar="H",
                   help="extra look-ahead hours in each hourly model (default 0)")
    p.add_argument("--out", default="aggregator-out", metavar="DIR",
                   help="output directory for figures and tables")
    p.set_defaults(func=run)
