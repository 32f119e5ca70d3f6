"""``python -m market.gateway.relay``: relay the orders of an API's SQLite store in its own process.

Reads the order store that ``gridshare serve`` writes (``--db``) and sends every accepted order
to ``GridMarket.submitOrderSigned`` (:meth:`market.gateway.gateway.OrderGateway.run`), until
SIGTERM/SIGINT. SQLite in WAL mode lets the API process append while this one updates statuses.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> int:
    from gridshare.chain.client import connect
    from gridshare.chain.config import ChainConfig
    from gridshare.chain.deploy import Deployment
    from market.chain import MarketChain

    from .gateway import GatewaySettings, OrderGateway
    from .store import OrderStore

    ap = argparse.ArgumentParser(prog="python -m market.gateway.relay", description=__doc__)
    ap.add_argument("--deployment", required=True)
    ap.add_argument("--rpc", required=True, help="JSON-RPC URL of the deployment's node")
    ap.add_argument("--db", required=True, help="the API's SQLite order store")
    ap.add_argument("--relayer", default="settler", help="key-ring role that sends")
    ap.add_argument("--nice", type=int, default=10, help="niceness added to this process")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="relay: %(levelname)s %(message)s")
    # background work: requests of the API process go first when the CPU is short
    os.nice(args.nice)
    deployment = Deployment.load(Path(args.deployment))
    chain = connect(ChainConfig(chain=args.rpc, retries=1, backoff_s=0.1,
                                request_timeout_s=5.0))
    store = OrderStore(args.db, durable_status=False)
    gateway = OrderGateway(MarketChain(chain, deployment), store,
                           GatewaySettings(relayer=args.relayer))

    def stop(_signum: int, _frame: Any) -> None:
        gateway.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    gateway.run(relay=True)
    gateway.store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
