"""``gridshare oracle run`` and ``gridshare oracle status``.

``run`` logs "ready" once it serves, "chain unavailable ..." / "chain back after N s" around a
node outage, and stops within a second of SIGTERM or SIGINT (the signal interrupts whatever it
is doing: every step is safe to cut, as a kill -9 is), then prints its status as JSON. Exit
codes: 0 stopped, 1 chain or configuration error, 3 fatal (ORACLE_ROLE lost), 4 chain reset (the
node is not the deployment's chain: one line says why; the store is kept). ``status`` opens the
store read-only and never fails because of the chain (exit 0 ok, 1 chain unavailable, 4 reset).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from gridshare.chain.config import DEFAULT_DEPLOYMENT_FILE, ENV_CHAIN, ENV_DEPLOYMENT, ChainConfig
from gridshare.chain.errors import ChainError
from gridshare.chain.identity import ChainResetError

ENV_ORACLE_DB = "GRIDSHARE_ORACLE_DB"
EXIT_CHAIN_RESET = 4
STATUS_LINES = ("chain", "feeder", "head_block", "processed_block", "lag_blocks",
                "confirmations", "last_interval_on_chain", "next_interval", "intervals_written",
                "intervals_skipped", "infeasible_steps", "readings", "late", "rejected",
                "rejected_by_rule", "nr_check", "stale_bands", "tx_failures", "median_latency_s")


class StopRequested(BaseException):
    """SIGTERM or SIGINT: raised in the main thread wherever the oracle is."""


def _db_path(args: argparse.Namespace) -> Path:
    if args.db:
        return Path(args.db)
    if os.environ.get(ENV_ORACLE_DB):
        return Path(os.environ[ENV_ORACLE_DB])
    deployment = Path(args.deployment)
    return deployment.with_name(deployment.stem + ".oracle.sqlite")


def _chain_config(args: argparse.Namespace, deployment: Any) -> ChainConfig:
    config = ChainConfig.from_env(rpc=args.rpc or (None if deployment.rpc == "embedded"
                                                   else deployment.rpc))
    if config.is_embedded:
        raise ValueError(
            "the embedded chain lives inside one process: the oracle needs a JSON-RPC node "
            f"(--rpc URL or ${ENV_CHAIN}); `gridshare simulate` runs everything in one process"
        )
    return config


def _oracle_config(args: argparse.Namespace) -> Any:
    from capacity.ocm.policy import BandPolicy
    from oracle.certify import NrSettings
    from oracle.registry import ReadingWindow
    from oracle.service import OcmSettings, OracleConfig

    policy = BandPolicy() if getattr(args, "band_policy", False) else None
    objective = getattr(args, "objective", None) or ("fair" if policy is not None else None)
    ocm = OcmSettings(**{k: v for k, v in {
        "forecast": getattr(args, "forecast", None), "n_random": getattr(args, "n_random", None),
        "ga_population": getattr(args, "ga_population", None),
        "ga_max_generations": getattr(args, "ga_generations", None),
        "objective": objective, "seed": getattr(args, "seed", None), "band_policy": policy,
        "max_line_loading_pct": getattr(args, "max_line_loading_pct", None),
        "max_trafo_loading_pct": getattr(args, "max_trafo_loading_pct", None),
        "history_days": getattr(args, "history_days", None),
        "ramp_coverage": getattr(args, "ramp_coverage", None),
        "battery_reserve_h": getattr(args, "battery_reserve_h", None),
        "station_sessions": getattr(args, "station_sessions", None) or None,
        "battery_follows": getattr(args, "battery_follows", None) or None,
        "reserve_station_kw": getattr(args, "reserve_station_kw", None),
    }.items() if v is not None})
    nr = NrSettings(**({} if getattr(args, "nr_random", None) is None
                       else {"n_random": args.nr_random}))
    window = ReadingWindow(**({} if getattr(args, "max_reading_age_s", None) is None
                              else {"max_age_s": args.max_reading_age_s}))
    return OracleConfig(
        db_path=str(_db_path(args)), confirmations=getattr(args, "confirmations", None),
        grace_s=getattr(args, "grace_s", 60),
        poll_interval_s=getattr(args, "poll_s", 1.0),
        explicit_gas=getattr(args, "explicit_gas", None), ocm=ocm, nr=nr, window=window,
    )


def _oracle(args: argparse.Namespace) -> Any:
    from gridshare.chain.client import connect
    from gridshare.chain.deploy import Deployment
    from oracle.service import Oracle

    deployment = Deployment.load(Path(args.deployment))
    chain = connect(_chain_config(args, deployment))
    return Oracle(chain, deployment, _oracle_config(args))


def _interrupt(_signum: int, _frame: Any) -> None:
    """Raise ``StopRequested`` once; later signals are ignored while the oracle stops."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise StopRequested


def _run(args: argparse.Namespace) -> int:
    from oracle.service import OracleFatal

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    oracle = None
    try:
        oracle = _oracle(args)
        code = oracle.run(once=args.once)
    except StopRequested:
        logging.getLogger("oracle").info("stopped by signal")
        # the cyclic GC's pass over pandas/pandapower objects at interpreter teardown takes
        # about a second; skip it (the store is closed below, nothing else holds state)
        gc.disable()
        gc.freeze()
        code = 0
    except ChainResetError as exc:
        print(f"gridshare oracle run: {exc}", file=sys.stderr)
        return EXIT_CHAIN_RESET
    except OracleFatal as exc:
        print(f"gridshare oracle run: fatal: {exc}", file=sys.stderr)
        return 3
    except ChainError as exc:
        print(f"gridshare oracle run: chain error: {exc}", file=sys.stderr)
        return 1
    if oracle is not None:
        print(json.dumps(oracle.status(), indent=2))
        oracle.close()
    return code


def _status_of(args: argparse.Namespace) -> dict[str, Any]:
    """The status (see ``oracle.status``); the store alone when the chain cannot be read."""
    from gridshare.chain.client import connect
    from gridshare.chain.deploy import Deployment
    from oracle.service import Oracle
    from oracle.status import chain_problem, store_status
    from oracle.store import Store

    deployment = Deployment.load(Path(args.deployment))
    config = _oracle_config(args)
    store = Store(config.db_path, read_only=True)  # a missing or foreign file: a clear error
    try:
        return Oracle(connect(_chain_config(args, deployment)), deployment, config,
                      read_only=True).status()
    except ChainError as exc:
        return {"chain": chain_problem(exc), "feeder": deployment.feeder,
                **store_status(store, deployment.interval_s)}
    finally:
        store.close()


def _status(args: argparse.Namespace) -> int:
    status = _status_of(args)
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        for key in STATUS_LINES:
            print(f"{key:24s} {status.get(key)}")
    chain = str(status.get("chain"))
    return 0 if chain == "ok" else EXIT_CHAIN_RESET if chain.startswith("reset") else 1


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


def _run_options(run: argparse.ArgumentParser) -> None:
    run.add_argument("--once", action="store_true",
                     help="process what is there and exit")
    run.add_argument("--confirmations", type=int, default=None,
                     help="blocks to wait before reading a block (default by node: 1 on anvil "
                     "and Besu, 6 on other nodes)")
    run.add_argument("--grace-s", "--grace-seconds", type=int, default=60,
                     help="wait this long after an interval's end (chain time) for missing "
                     "meters (default 60)")
    add_settings_options(run)
    run.add_argument("--poll-s", "--poll-seconds", type=float, default=1.0,
                     help="longest pause between polls when idle; a new block ends it at once "
                     "(default 1 s)")
    run.add_argument("--explicit-gas", type=int, default=None,
                     help="send band transactions with this gas limit instead of estimating")


def add_settings_options(parser: Any) -> list[str]:
    """The oracle's settings hashed into the band inputs, on ``parser`` (a parser or group):
    ``oracle run``'s, and ``gridshare serve``'s for the DSO audit, which must use the oracle's.
    Returns their destinations (``SETTINGS_OPTIONS``); ``_oracle_config`` maps them."""
    add = parser.add_argument
    actions = [
        add("--max-reading-age-s", "--max-reading-age-seconds", type=int, default=None,
            help="reject readings whose minute ended longer before their block (default 3600)"),
        add("--forecast", choices=("all", "extremes", "last", "ramps"), default=None,
            help="OCM steps: minutes of the source interval (all, extremes, last) or the last "
            "minute plus the worst ramps of the same interval on previous days (ramps); default "
            "extremes"),
        add("--n-random", type=int, default=None,
            help="random certification points per step (default 200)"),
        add("--nr-random", type=int, default=None,
            help="random Newton-Raphson points per step besides the band's two corners "
            "(default 2)"),
        add("--ga-population", type=int, default=None, help="GA population size"),
        add("--ga-generations", type=int, default=None, help="GA generations (max)"),
        add("--objective", choices=("sum", "two-step", "fair"), default=None,
            help="OCM objective (default sum; fair with --band-policy)"),
        add("--band-policy", action="store_true",
            help="the product band policy (capacity.ocm.policy, docs/ocm.md): no station forced "
            "on, 4.2 kW guaranteed per station, then a fair share; needs objective fair (the "
            "default with it). Default: the paper's objective"),
        add("--history-days", type=int, default=None,
            help="previous days the ramps forecast and the battery reserve learn from "
            "(default 28)"),
        add("--ramp-coverage", type=float, default=None,
            help="share of previous days' ramps the ramps forecast covers, in (0, 1] "
            "(default 1: the worst)"),
        add("--battery-reserve-h", type=float, default=None,
            help="bands keep the community battery's charge for the discharge the next H hours "
            "need (oracle.battery); default: bands blind to its charge"),
        add("--station-sessions", action="store_true",
            help="a charging station gets a band and its guarantee only while a vehicle "
            "session its meter declared on chain covers the interval (oracle.sessions)"),
        add("--battery-follows", action="store_true",
            help="the community battery follows the feeder within its band (it gives, minute "
            "by minute, the discharge that keeps every bus at v_low): its band forces only "
            "what the grid needs now, and it funds the stations' share above their guarantee "
            "(docs/oracle.md)"),
        add("--reserve-station-kw", type=float, default=None,
            help="power per charging station the battery reserve funds, kW (default: the "
            "guarantee, 4.2 kW with --band-policy)"),
        add("--seed", type=int, default=None, help="base OCM seed (default 0)"),
        add("--max-line-loading-pct", type=float, default=None,
            help="thermal limit of every rated line, percent of its rating (default 100)"),
        add("--max-trafo-loading-pct", type=float, default=None,
            help="thermal limit of every transformer, percent of its rating (default 100)"),
    ]
    return [a.dest for a in actions]


#: Destinations of the oracle's hashed settings (``add_settings_options``).
SETTINGS_OPTIONS = tuple(add_settings_options(argparse.ArgumentParser()))


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``oracle run`` and ``oracle status``."""
    oracle = subparsers.add_parser("oracle", help="the oracle: meter readings in, OCM bands out")
    sub = oracle.add_subparsers(dest="oracle_command", metavar="ACTION", required=True)
    run = sub.add_parser("run", help="serve: ingest readings, write bands (see docs/oracle.md)")
    _common(run)
    _run_options(run)
    run.set_defaults(func=_run)
    status = sub.add_parser("status", help="processed block, lag, intervals, readings, checks "
                            "(read-only)")
    _common(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=_status)
