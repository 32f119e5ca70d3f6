"""``gridshare fleet``: certified OCM bands for a DSO's fleet of feeders on a Dask cluster.

Band settings are the oracle's (``oracle.service.OcmSettings``); the OCM options below override
them exactly as ``gridshare oracle run``'s do. Details: docs/fleet.md.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gridshare.fleet.run import FleetJob, FleetReport

EXIT_FEEDERS_FAILED = 1


def add_commands(subparsers: Any) -> None:
    """Register ``gridshare fleet``."""
    p = subparsers.add_parser("fleet", help="OCM bands for many feeders on a Dask cluster",
                              description=__doc__.splitlines()[0])
    p.add_argument("--feeders", type=int, default=None,
                   help="number of feeders: seeded built-in variants, or the first N files of "
                        "--feeder-dir (default: all of them; required without --feeder-dir)")
    p.add_argument("--feeder-dir", type=Path, default=None,
                   help="directory of feeder files (project format or pandapower JSON)")
    p.add_argument("--hours", type=int, default=1, help="hours of the day to compute (default 1)")
    p.add_argument("--start-hour", type=int, default=0, help="first local hour (default 0)")
    p.add_argument("--seed", type=int, default=0,
                   help="variants, day profiles and the OCM base seed (default 0)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=None,
                       help="local Dask cluster of W worker processes (default: the cores)")
    where.add_argument("--scheduler", default=None,
                       help="address of a running Dask scheduler (tcp://HOST:PORT)")
    p.add_argument("--retries", type=int, default=2, help="retries of a failing task (default 2)")
    p.add_argument("--forecast", choices=("all", "extremes", "last"), default=None,
                   help="OCM steps per interval (default: the oracle's, extremes)")
    p.add_argument("--n-random", type=int, default=None, help="certification points per step")
    p.add_argument("--ga-population", type=int, default=None, help="GA population")
    p.add_argument("--ga-generations", type=int, default=None, help="GA generations at most")
    p.add_argument("--objective", choices=("sum", "two-step", "fair"), default=None,
                   help="OCM objective (default: the oracle's, sum)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, type=Path, help="output directory (resumable)")
    p.set_defaults(func=run_fleet_command)


def job_of(args: argparse.Namespace) -> FleetJob:
    """The fleet job of the parsed arguments."""
    from gridshare.fleet.run import FleetJob
    from gridshare.fleet.sources import file_sources, variant_sources
    from oracle.service import OcmSettings

    if args.feeder_dir is not None:
        sources = file_sources(args.feeder_dir, args.feeders)
    elif args.feeders is None:
        raise ValueError("give --feeders N (built-in variants) or --feeder-dir DIR")
    else:
        sources = variant_sources(args.feeders)
    overrides = {"forecast": args.forecast, "n_random": args.n_random,
                 "ga_population": args.ga_population,
                 "ga_max_generations": args.ga_generations, "objective": args.objective}
    settings = dataclasses.replace(OcmSettings(), seed=args.seed,
                                   **{k: v for k, v in overrides.items() if v is not None})
    return FleetJob(tuple(sources), args.out, start_hour=args.start_hour, hours=args.hours,
                    seed=args.seed, settings=settings, retries=args.retries)


def print_report(job: FleetJob, report: FleetReport, where: str) -> None:
    """The run in a few lines."""
    print(f"fleet: {len(job.sources)} feeders x {job.hours} h from {job.start_hour:02d}:00 "
          f"on {where} ({report.threads} worker threads)")
    print(f"  computed {len(report.done)}, resumed {len(report.resumed)}, "
          f"failed {len(report.failed)}")
    for name, reason in report.failed.items():
        print(f"  failed {name}: {reason}")
    print(f"  wall {report.wall_s:.1f} s, {report.feeders_per_s:.3f} feeders/s computed")
    print(f"summary: {report.summary}")


def run_fleet_command(args: argparse.Namespace) -> int:
    """``gridshare fleet``: 0 when every feeder has its band file, 1 when some failed."""
    from gridshare.fleet.cluster import fleet_client
    from gridshare.fleet.run import run_fleet
    from gridshare.fleet.rundir import RunDir

    job = job_of(args)
    RunDir(job.out).prepare(job.params())  # a mismatching --out fails before the cluster starts
    where = args.scheduler or f"a local cluster of {args.workers or 'all'} workers"
    with fleet_client(args.workers, args.scheduler) as client:
        report = run_fleet(job, client, progress=not args.no_progress)
    print_report(job, report, where)
    return EXIT_FEEDERS_FAILED if report.failed else 0
