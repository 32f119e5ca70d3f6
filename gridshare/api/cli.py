"""``gridshare serve``: run the market REST API with uvicorn.

* ``--deployment FILE`` (default ``$GRIDSHARE_DEPLOYMENT`` or ``deployment.json``) and
  ``--rpc URL`` (default: the deployment's ``rpc``, else ``$GRIDSHARE_CHAIN``): serve that
  deployment on that node (anvil, Besu).
* On the embedded chain (no RPC anywhere) the chain lives inside this process: the command
  deploys a fresh market on it first (``--feeder``) and serves that one.
* Relay of accepted orders to the chain: a child process (``python -m market.gateway.relay``) on
  an RPC node, a thread on the embedded chain (or with ``--relay-in-process``).
* ``--db FILE``: the SQLite order store (default ``orders.sqlite`` next to the deployment
  file); accepted orders waiting for the chain survive a restart. One relay per store and key:
  a second ``serve`` on the same store is refused before it starts (exit code 3).
* Signals: SIGTERM and SIGINT stop the server and then its relay process (waited for); the
  relay also stops by itself when this process dies (``--parent-pid``, ``PR_SET_PDEATHSIG``).
* ``--confirmations N``: blocks on top of ``OrderPlaced`` before an order counts as relayed;
  ``--cors-origin URL`` (repeatable): browser origins allowed (none by default);
  ``--rate-per-ip`` / ``--rate-per-address``: requests per second (429 above).
* The DSO audit (``/v1/audit/compliance``, ``/v1/bands``): ``--max-line-loading-pct`` /
  ``--max-trafo-loading-pct`` (default 100: percent of the ratings) are the loading limits; they
  and the other oracle settings, ``gridshare oracle run``'s own options
  (``oracle.cli.add_settings_options``: ``--forecast``, ``--band-policy``,
  ``--battery-follows``, ...), must be the oracle's: they are hashed into the band inputs the
  audit recomputes (a band whose hash does not match is reported ``stale``).
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

#: Exit code when another relay holds the order store or the relayer key.
EXIT_LOCKED = 3
#: Seconds the relay process may take to stop after SIGTERM before it is killed.
RELAY_STOP_S = 30.0


def _stop_on_sigterm() -> None:
    """SIGTERM ends the process like SIGINT (SystemExit), so ``finally`` blocks run: uvicorn
    restores this handler after its graceful shutdown and raises the signal again."""

    def handler(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def _start_relay(args: argparse.Namespace, path: Path, rpc: str, db: Path
                 ) -> subprocess.Popen[bytes]:
    """The relay process of this server (it stops when this process dies)."""
    return subprocess.Popen(
        [sys.executable, "-m", "market.gateway.relay", "--deployment", str(path), "--rpc", rpc,
         "--db", str(db), "--relayer", args.relayer, "--confirmations",
         str(args.confirmations), "--parent-pid", str(os.getpid())])


def _stop_relay(relay: subprocess.Popen[bytes]) -> None:
    if relay.poll() is None:
        relay.terminate()
    try:
        relay.wait(timeout=RELAY_STOP_S)
    except subprocess.TimeoutExpired:
        relay.kill()
        relay.wait()


def _check_relay_free(gateway: Any) -> str | None:
    """None when no relay holds the store or key, else the refusal (the lock is released
    again: the relay process takes it)."""
    from market.gateway.locks import RelayLockedError

    try:
        gateway.lock_relay()
    except RelayLockedError as exc:
        return str(exc)
    gateway.unlock_relay()
    return None


def _settings(args: argparse.Namespace) -> tuple[Any, Any]:
    from gridshare.api.app import ApiSettings
    from market.gateway import GatewaySettings

    api = ApiSettings(rate_per_ip_s=args.rate_per_ip,
                      burst_per_ip=max(1, int(2 * args.rate_per_ip)),
                      rate_per_address_s=args.rate_per_address,
                      burst_per_address=max(1, int(2 * args.rate_per_address)),
                      cors_origins=tuple(args.cors_origin or ()))
    return GatewaySettings(relayer=args.relayer, confirmations=args.confirmations), api


def _audit_config(args: argparse.Namespace) -> Any:
    """The oracle's settings as the audit uses them (``oracle.cli``'s own mapping)."""
    from oracle.cli import SETTINGS_OPTIONS, _oracle_config

    return _oracle_config(argparse.Namespace(
        db=":memory:", **{k: getattr(args, k, None) for k in SETTINGS_OPTIONS}))


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gridshare.api import create_app
    from gridshare.chain.client import connect
    from gridshare.chain.config import DEFAULT_FEEDER, EMBEDDED, ChainConfig
    from gridshare.chain.deploy import Deployment, DeployParams, deploy
    from gridshare.chain.errors import ChainError

    path = Path(args.deployment)
    deployment = Deployment.load(path) if path.is_file() else None
    rpc = args.rpc or (deployment.rpc if deployment and deployment.rpc != EMBEDDED else None)
    config = ChainConfig.from_env(rpc=rpc, retries=1, backoff_s=0.1, request_timeout_s=5.0)
    try:
        chain = connect(config)
        if config.is_embedded:
            print("embedded chain: deploying a fresh market inside this process "
                  f"({args.feeder or DEFAULT_FEEDER})", file=sys.stderr)
            deployment = deploy(chain, DeployParams(feeder=args.feeder or DEFAULT_FEEDER),
                                log=lambda m: print(m, file=sys.stderr))
        elif deployment is None:
            raise FileNotFoundError(f"no deployment file at {path} (run `gridshare deploy "
                                    f"--rpc {config.chain}`)")
        elif not deployment.is_live(chain):
            raise ValueError(f"the contracts of {path} are not on {config.chain}")
    except ChainError as exc:
        print(f"gridshare serve: chain error: {exc}", file=sys.stderr)
        return 1
    db = Path(args.db) if args.db else path.resolve().parent / "orders.sqlite"
    # On an RPC node the relay runs in a process of its own (it would otherwise compete with
    # the requests for the interpreter lock); the embedded chain exists only in this process.
    separate = not config.is_embedded and not args.relay_in_process
    settings, api_settings = _settings(args)
    app = create_app(chain, deployment, db_path=db, relay=not separate, settings=settings,
                     api_settings=api_settings)
    app.state.api.audit.configure(_audit_config(args))
    refusal = _check_relay_free(app.state.api.gateway)
    if refusal is not None:
        print(f"gridshare serve: {refusal}", file=sys.stderr)
        return EXIT_LOCKED
    _stop_on_sigterm()
    relay = _start_relay(args, path, config.chain, db) if separate else None
    print(f"serving market {deployment.contracts['GridMarket']} (chain {chain.chain_id}) on "
          f"http://{args.host}:{args.port}  docs: /docs  orders: {db}"
          f"{f'  relay: process {relay.pid}' if relay else ''}", file=sys.stderr)
    gc.freeze()  # the deployment and contract objects are long-lived: keep them out of GC
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                    access_log=args.access_log)
    finally:
        if relay is not None:
            _stop_relay(relay)
    return 0


def _audit_options(p: argparse.ArgumentParser) -> None:
    """The oracle settings of the DSO audit (see the module docstring)."""
    from oracle.cli import add_settings_options

    add_settings_options(p.add_argument_group(
        "DSO audit: the oracle's settings (hashed into the band inputs; gridshare oracle run's "
        "own options, which must be the oracle's)"))


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``gridshare serve``."""
    from gridshare.chain.config import DEFAULT_DEPLOYMENT_FILE, ENV_DEPLOYMENT

    p = subparsers.add_parser("serve", help="run the market REST API (uvicorn)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--deployment", default=os.environ.get(ENV_DEPLOYMENT, DEFAULT_DEPLOYMENT_FILE),
                   help=f"deployment file (default ${ENV_DEPLOYMENT} or {DEFAULT_DEPLOYMENT_FILE})")
    p.add_argument("--rpc", default=None,
                   help="JSON-RPC URL (default: the deployment's, else $GRIDSHARE_CHAIN, else "
                   "the embedded chain)")
    p.add_argument("--db", default=None, help="SQLite order store (default: orders.sqlite next "
                   "to the deployment file)")
    p.add_argument("--feeder", default=None, help="feeder to deploy on the embedded chain")
    p.add_argument("--relayer", default="settler",
                   help="key-ring role that relays orders to the chain (default settler)")
    p.add_argument("--relay-in-process", action="store_true",
                   help="relay orders in a thread of the server instead of a process of its own")
    p.add_argument("--confirmations", type=int, default=0,
                   help="blocks on top of OrderPlaced before an order is relayed (default 0)")
    p.add_argument("--cors-origin", action="append", default=None, metavar="URL",
                   help="browser origin allowed to call the API (repeatable; default none)")
    p.add_argument("--rate-per-ip", type=float, default=2000.0,
                   help="requests per second per client IP (default 2000)")
    p.add_argument("--rate-per-address", type=float, default=50.0,
                   help="orders and private reads per second per member (default 50)")
    _audit_options(p)
    p.add_argument("--log-level", default="warning", help="uvicorn log level")
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(func=_serve)
