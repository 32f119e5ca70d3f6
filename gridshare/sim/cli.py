"""``gridshare simulate``: a community day end to end, with a report (docs/simulation.md)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from gridshare.chain.config import EMBEDDED


def add_commands(subparsers: Any) -> None:
    """Register ``simulate``."""
    p = subparsers.add_parser(
        "simulate",
        help="simulate a community day end to end (deploy, meters, oracle, market, aggregator, "
             "audit) and write a report",
        description="Deploy the contracts, stream minute meter readings of a built-in feeder, "
                    "run the oracle (OCM bands), the households' and charging stations' signed "
                    "orders, clearing and settlement, the hour-ahead aggregator and the DSO "
                    "audit; write an HTML report with CSV/JSON data to --out.",
    )
    p.add_argument("--feeder", default="heimschuh-like", help="built-in feeder (default "
                   "heimschuh-like)")
    p.add_argument("--chain", default=EMBEDDED,
                   help="'embedded' (in-process chain, default) or a JSON-RPC URL such as "
                        "http://127.0.0.1:8545 (anvil, the docker-compose Besu devnet)")
    p.add_argument("--hours", type=float, default=24.0,
                   help="simulated hours from --start-hour (default 24; the first interval is the "
                        "warm-up)")
    p.add_argument("--start-hour", type=float, default=0.0,
                   help="hour of day the run starts at (its first interval is the warm-up)")
    p.add_argument("--seed", type=int, default=0, help="seed of profiles, EVs and prices")
    p.add_argument("--interval-s", type=int, default=900,
                   help="market and band interval in seconds (default 900 = 15 min)")
    p.add_argument("--readings-batch-min", type=int, default=15,
                   help="minutes of readings per posting transaction (default 15: one post per "
                        "meter account and interval; 1 posts every minute)")
    p.add_argument("--nr-steps", type=int, default=48,
                   help="intervals (at their OCM steps) and minutes of the day as operated checked "
                        "with pandapower's Newton-Raphson (default 48 each)")
    p.add_argument("--nr-points", type=int, default=10,
                   help="random operating points inside the bands per checked step (default 10)")
    p.add_argument("--max-line-loading-pct", type=float, default=100.0,
                   help="thermal limit of every rated line in the bands and the Newton-Raphson "
                   "checks, percent of its rating (default 100)")
    p.add_argument("--max-trafo-loading-pct", type=float, default=100.0,
                   help="thermal limit of the transformer, percent of its rating (default 100)")
    p.add_argument("--station-sessions", action="store_true",
                   help="the oracle bands each charging station by the vehicle sessions its "
                   "charger declares on chain (oracle.sessions; off by default: see "
                   "docs/simulation.md)")
    p.add_argument("--out", required=True, type=Path, help="directory for the report and data")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_simulate)


def run_simulate(args: argparse.Namespace) -> int:
    """Run the simulation, write the report, print the summary; exit 0 when every check holds."""
    from gridshare.sim import Simulation, SimulationConfig
    from gridshare.sim.report import format_summary, write_report
    from gridshare.sim.run import default_ocm

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("pandapower", "oracle.service", "oracle.ingest"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    config = SimulationConfig(
        feeder=args.feeder, chain=args.chain, hours=args.hours,
        start_hour=args.start_hour, seed=args.seed,
        interval_s=args.interval_s, readings_batch_min=args.readings_batch_min,
        nr_steps=args.nr_steps, nr_random_points=args.nr_points,
        progress=not args.no_progress,
        ocm=default_ocm(max_line_loading_pct=args.max_line_loading_pct,
                        max_trafo_loading_pct=args.max_trafo_loading_pct,
                        station_sessions=args.station_sessions),
    )
    started = time.perf_counter()
    result = Simulation(config, args.out).run()
    result.timings_s["total"] = time.perf_counter() - started
    index = write_report(result, args.out)
    print(format_summary(result))
    print(f"report: {index}")
    print(f"data:   {args.out / 'summary.json'} and CSV files in {args.out}")
    if not result.summary["ok"]:
        print("simulate: some check failed (see the summary above)", file=sys.stderr)
        print(json.dumps({k: result.summary[k] for k in ("replay", "audit_violations",
                                                          "nr_violations",
                                                          "intervals_not_settled")},
                         default=str), file=sys.stderr)
        return 3
    return 0
