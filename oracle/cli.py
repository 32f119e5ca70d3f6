"""``gridshare oracle run`` and ``gridshare oracle status``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from gridshare.chain.config import DEFAULT_DEPLOYMENT_FILE, ENV_CHAIN, ENV_DEPLOYMENT, ChainConfig
from gridshare.chain.errors import ChainError

ENV_ORACLE_DB = "GRIDSHARE_ORACLE_DB"


def _db_path(args: argparse.Namespace) -> Path:
    if args.db:
        return Path(args.db)
    if os.environ.get(ENV_ORACLE_DB):
        return Path(os.environ[ENV_ORACLE_DB])
    deployment = Path(args.deployment)
    return deployment.with_name(deployment.stem + ".oracle.sqlite")


def _oracle(args: argparse.Namespace, read_only: bool = False, **overrides: Any):
    from gridshare.chain.client import connect
    from gridshare.chain.deploy import Deployment
    from oracle.service import OcmSettings, Oracle, OracleConfig

    deployment = Deployment.load(Path(args.deployment))
    config = ChainConfig.from_env(rpc=args.rpc or (None if deployment.rpc == "embedded"
                                                   else deployment.rpc))
    if config.is_embedded:
        raise ValueError(
            "the embedded chain lives inside one process: the oracle needs a JSON-RPC node "
            f"(--rpc URL or ${ENV_CHAIN}); `gridshare simulate` runs everything in one process"
        )
    chain = connect(config)
    ocm = OcmSettings(**{k: v for k, v in {
        "forecast": getattr(args, "forecast", None), "n_random": getattr(args, "n_random", None),
        "ga_population": getattr(args, "ga_population", None),
        "ga_max_generations": getattr(args, "ga_generations", None),
        "objective": getattr(args, "objective", None), "seed": getattr(args, "seed", None),
    }.items() if v is not None})
    oracle_config = OracleConfig(
        db_path=str(_db_path(args)), confirmations=getattr(args, "confirmations", 0),
        clock=getattr(args, "clock", "readings"), grace_s=getattr(args, "grace_seconds", 60),
        poll_interval_s=getattr(args, "poll_seconds", 1.0),
        explicit_gas=getattr(args, "explicit_gas", None), ocm=ocm, **overrides,
    )
    return Oracle(chain, deployment, oracle_config, read_only=read_only)


def _run(args: argparse.Namespace) -> int:
    from oracle.service import OracleFatal

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stopping = {"flag": False}

    def _stop(_signum: int, _frame: Any) -> None:
        stopping["flag"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        oracle = _oracle(args)
        code = oracle.run(once=args.once, stop=lambda: stopping["flag"])
        print(json.dumps(oracle.status(), indent=2))
        return code
    except OracleFatal as exc:
        print(f"gridshare oracle run: fatal: {exc}", file=sys.stderr)
        return 3
    except ChainError as exc:
        print(f"gridshare oracle run: chain error: {exc}", file=sys.stderr)
        return 1


def _status(args: argparse.Namespace) -> int:
    try:
        oracle = _oracle(args, read_only=True)
        status = oracle.status()
    except ChainError as exc:
        print(f"gridshare oracle status: chain error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    for key in ("feeder", "head_block", "processed_block", "lag_blocks", "confirmations",
                "last_interval_on_chain", "next_interval", "intervals_written",
                "intervals_skipped", "infeasible_steps", "readings", "late", "rejected",
                "tx_failures", "median_latency_s"):
        print(f"{key:24s} {status[key]}")
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rpc", default=None,
                        help=f"JSON-RPC URL (default: ${ENV_CHAIN}, else the deployment's rpc)")
    parser.add_argument("--deployment",
                        default=os.environ.get(ENV_DEPLOYMENT, DEFAULT_DEPLOYMENT_FILE),
                        help=f"deployment file (default ${ENV_DEPLOYMENT} or "
                        f"{DEFAULT_DEPLOYMENT_FILE})")
    parser.add_argument("--db", default=None,
                        help=f"oracle SQLite file (default ${ENV_ORACLE_DB} or "
                        "<deployment>.oracle.sqlite)")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``oracle run`` and ``oracle status``."""
    oracle = subparsers.add_parser("oracle", help="the oracle: meter readings in, OCM bands out")
    sub = oracle.add_subparsers(dest="oracle_command", metavar="ACTION", required=True)
    run = sub.add_parser("run", help="serve: ingest readings, write bands (see docs/oracle.md)")
    _common(run)
    run.add_argument("--once", action="store_true",
                     help="process what is there and exit")
    run.add_argument("--confirmations", type=int, default=0,
                     help="blocks to wait before reading a block (0 on QBFT; more on chains "
                     "that reorganise)")
    run.add_argument("--clock", choices=("readings", "block"), default="readings",
                     help="time source for closing intervals: the latest reading (sped-up "
                     "meters) or the latest block (real time); default readings")
    run.add_argument("--grace-seconds", type=int, default=60,
                     help="wait this long after an interval's end for missing meters (default 60)")
    run.add_argument("--forecast", choices=("all", "extremes", "last"), default=None,
                     help="OCM steps from the source interval (default extremes)")
    run.add_argument("--n-random", type=int, default=None,
                     help="random certification points per step (default 200)")
    run.add_argument("--ga-population", type=int, default=None, help="GA population size")
    run.add_argument("--ga-generations", type=int, default=None, help="GA generations (max)")
    run.add_argument("--objective", choices=("sum", "two-step", "fair"), default=None,
                     help="OCM objective (default sum)")
    run.add_argument("--seed", type=int, default=None, help="base OCM seed (default 0)")
    run.add_argument("--poll-seconds", type=float, default=1.0,
                     help="pause between polls when idle (default 1 s)")
    run.add_argument("--explicit-gas", type=int, default=None,
                     help="send band transactions with this gas limit instead of estimating")
    run.set_defaults(func=_run)
    status = sub.add_parser("status", help="processed block, lag, last interval, infeasible "
                            "steps")
    _common(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=_status)
