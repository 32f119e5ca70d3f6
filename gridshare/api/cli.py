"""``gridshare serve``: run the market REST API with uvicorn.

* ``--deployment FILE`` (default ``$GRIDSHARE_DEPLOYMENT`` or ``deployment.json``) and
  ``--rpc URL`` (default: the deployment's ``rpc``, else ``$GRIDSHARE_CHAIN``): serve that
  deployment on that node (anvil, Besu).
* On the embedded chain (no RPC anywhere) the chain lives inside this process: the command
  deploys a fresh market on it first (``--feeder``) and serves that one.
* Relay of accepted orders to the chain: a child process (``python -m market.gateway.relay``) on
  an RPC node, a thread on the embedded chain (or with ``--relay-in-process``).
* ``--db FILE``: the SQLite order store (default ``orders.sqlite`` next to the deployment
  file); accepted orders waiting for the chain survive a restart.
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
from pathlib import Path


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gridshare.api import create_app
    from gridshare.chain.client import connect
    from gridshare.chain.config import DEFAULT_FEEDER, EMBEDDED, ChainConfig
    from gridshare.chain.deploy import Deployment, DeployParams, deploy
    from gridshare.chain.errors import ChainError
    from market.gateway import GatewaySettings

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
    app = create_app(chain, deployment, db_path=db, relay=not separate,
                     settings=GatewaySettings(relayer=args.relayer))
    relay = None
    if separate:
        relay = subprocess.Popen(
            [sys.executable, "-m", "market.gateway.relay", "--deployment", str(path), "--rpc",
             config.chain, "--db", str(db), "--relayer", args.relayer])
    print(f"serving market {deployment.contracts['GridMarket']} (chain {chain.chain_id}) on "
          f"http://{args.host}:{args.port}  docs: /docs  orders: {db}"
          f"{f'  relay: process {relay.pid}' if relay else ''}", file=sys.stderr)
    gc.freeze()  # the deployment and contract objects are long-lived: keep them out of GC
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                    access_log=args.access_log)
    finally:
        if relay is not None:
            relay.terminate()
            try:
                relay.wait(timeout=30)
            except subprocess.TimeoutExpired:
                relay.kill()
                relay.wait()
    return 0


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
    p.add_argument("--log-level", default="warning", help="uvicorn log level")
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(func=_serve)
