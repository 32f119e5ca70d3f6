"""``gridshare meters run``: the meter simulator as a command, for devnets (docs/oracle.md).

Registers the feeder's transformer and customer meters if they are not registered yet
(``gridshare.sim.meters.register_meters``), then posts N minutes of the feeder's readings, one
minute at a time, each once the chain's clock has passed it: minute k is timestamped
``T0 + 60 k`` where ``T0`` is the start of the chain's current minute, and takes the values of
minute ``M + k`` of the feeder's profile day (``--start-minute M``; default: the chain's current
minute of the profile day, so PV follows the chain's time of day). It waits for the chain's
clock, or with ``--warp`` (anvil, Hardhat) moves it forward a minute at a time. Then it exits.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from gridshare.chain.config import DEFAULT_DEPLOYMENT_FILE, ENV_CHAIN, ENV_DEPLOYMENT, ChainConfig
from gridshare.chain.errors import ChainError

MINUTES_PER_DAY = 1440


def start_of_minute_s(chain_time_s: int) -> int:
    """The start (unix s) of the minute that contains ``chain_time_s``."""
    return int(chain_time_s) // 60 * 60


def profile_minute(t0_s: int, profile_day_start_s: int) -> int:
    """The minute of the profile day (0..1439) at unix time ``t0_s`` (the profile's time zone,
    as the oracle's profile forecast maps times to minutes)."""
    return (int(t0_s) - int(profile_day_start_s)) // 60 % MINUTES_PER_DAY


def _simulator(args: argparse.Namespace) -> tuple[Any, int]:
    """Connect, register the meters, build the simulator; returns it and the first minute."""
    from gridshare.chain.client import connect
    from gridshare.chain.deploy import Deployment
    from gridshare.sim.meters import MeterSimulator, chain_time_s, register_meters
    from oracle.state import feeder_profiles

    deployment = Deployment.load(Path(args.deployment))
    config = ChainConfig.from_env(rpc=args.rpc or (None if deployment.rpc == "embedded"
                                                   else deployment.rpc))
    if config.is_embedded:
        raise ValueError("the embedded chain lives inside one process: the meters need a "
                         f"JSON-RPC node (--rpc URL or ${ENV_CHAIN})")
    chain = connect(config)
    setup = register_meters(chain, deployment)
    t0_s = start_of_minute_s(chain_time_s(chain))
    profiles = feeder_profiles(deployment.feeder, args.seed)
    start = (profile_minute(t0_s, int(profiles.time[0].timestamp()))
             if args.start_minute is None else args.start_minute)
    sim = MeterSimulator(chain, deployment, setup, seed=args.seed, day_start_s=t0_s - 60 * start,
                         warp=args.warp)
    return sim, start


def _run(args: argparse.Namespace) -> int:
    if args.minutes < 1:
        raise ValueError(f"--minutes must be >= 1, got {args.minutes}")
    if args.start_minute is not None and not 0 <= args.start_minute < MINUTES_PER_DAY:
        raise ValueError(f"--start-minute must lie in 0..{MINUTES_PER_DAY - 1}")
    try:
        return _post(args)
    except ChainError as exc:
        print(f"gridshare meters run: chain error: {exc}", file=sys.stderr)
        return 1


def _post(args: argparse.Namespace) -> int:
    sim, start = _simulator(args)
    n_devices = len(sim.setup.devices)
    print(f"meters: {n_devices} devices of {sim.deployment.feeder}; minutes {start}.."
          f"{start + args.minutes - 1} of the profile day from unix {sim.timestamp(start)} "
          f"({'warping' if sim.warp else 'following'} the chain's clock)", flush=True)
    for minute in range(start, start + args.minutes):
        receipts = sim.post([minute])
        blocks = sorted({int(r["blockNumber"]) for r in receipts})
        print(f"minute {minute % MINUTES_PER_DAY // 60:02d}:{minute % 60:02d} "
              f"(unix {sim.timestamp(minute)}): {n_devices} readings in block(s) "
              f"{', '.join(map(str, blocks))}", flush=True)
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``meters run``."""
    meters = subparsers.add_parser("meters", help="the meter simulator for devnets")
    sub = meters.add_subparsers(dest="meters_command", metavar="ACTION", required=True)
    run = sub.add_parser("run", help="register the feeder's meters and post N minutes of "
                         "readings at the chain's time")
    run.add_argument("--deployment", default=os.environ.get(ENV_DEPLOYMENT,
                                                            DEFAULT_DEPLOYMENT_FILE),
                     help=f"deployment file (default ${ENV_DEPLOYMENT} or "
                     f"{DEFAULT_DEPLOYMENT_FILE})")
    run.add_argument("--rpc", default=None,
                     help=f"JSON-RPC URL (default: ${ENV_CHAIN}, else the deployment's rpc)")
    run.add_argument("--minutes", type=int, required=True, help="minutes of readings to post")
    run.add_argument("--start-minute", type=int, default=None,
                     help="first minute of the profile day to post (0..1439; default: the "
                     "chain's current minute of day)")
    run.add_argument("--seed", type=int, default=1, help="profile seed (default 1)")
    run.add_argument("--warp", action="store_true",
                     help="move the chain's clock a minute per minute posted instead of "
                     "waiting for it (anvil, Hardhat)")
    run.set_defaults(func=_run)
