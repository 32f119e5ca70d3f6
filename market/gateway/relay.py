"""``python -m market.gateway.relay``: relay the orders of an API's SQLite store in its own process.

Reads the order store that ``gridshare serve`` writes (``--db``) and sends every accepted order
to ``GridMarket.submitOrdersSigned`` (:class:`market.gateway.relayer.Relayer`, driven by
:meth:`market.gateway.gateway.OrderGateway.run`), until SIGTERM/SIGINT, or until the process
given by ``--parent-pid`` (``gridshare serve``) is gone. SQLite in WAL mode lets the API process
append while this one updates statuses. A second relay on the same store or with the same key
is refused (exit code 3, the message names the process holding it).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

#: Exit code when another relay holds the store or the key.
EXIT_LOCKED = 3
#: Seconds between two checks that the parent process is alive.
PARENT_CHECK_S = 0.5


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m market.gateway.relay", description=__doc__)
    ap.add_argument("--deployment", required=True)
    ap.add_argument("--rpc", required=True, help="JSON-RPC URL of the deployment's node")
    ap.add_argument("--db", required=True, help="the API's SQLite order store")
    ap.add_argument("--relayer", default="settler", help="key-ring role that sends")
    ap.add_argument("--confirmations", type=int, default=0,
                    help="blocks on top of OrderPlaced before an order is relayed")
    ap.add_argument("--nice", type=int, default=10, help="niceness added to this process")
    ap.add_argument("--parent-pid", type=int, default=None,
                    help="stop when this process (the server) is gone")
    return ap.parse_args(argv)


def _watch_parent(parent_pid: int, stop: Any) -> None:
    """Stop the gateway once ``parent_pid`` is no longer this process's parent."""
    def loop() -> None:
        while not stop.wait_stopped(PARENT_CHECK_S):
            if os.getppid() != parent_pid:
                logging.getLogger(__name__).warning(
                    "parent process %d is gone: relay stops", parent_pid)
                stop.stop()
                return

    threading.Thread(target=loop, name="parent-watch", daemon=True).start()


class _Stopper:
    """Stops the gateway from a signal handler or the parent watch."""

    def __init__(self, gateway: Any) -> None:
        self.gateway = gateway
        self.event = threading.Event()

    def stop(self, *_args: Any) -> None:
        self.event.set()
        self.gateway.request_stop()

    def wait_stopped(self, timeout_s: float) -> bool:
        return self.event.wait(timeout_s)


def main(argv: list[str] | None = None) -> int:
    from gridshare.chain.client import connect
    from gridshare.chain.config import ChainConfig
    from gridshare.chain.deploy import Deployment
    from market.chain import MarketChain

    from .gateway import GatewaySettings, OrderGateway
    from .locks import RelayLockedError, exit_with_parent
    from .store import OrderStore

    args = _args(argv)
    if args.parent_pid is not None:
        exit_with_parent()
    logging.basicConfig(level=logging.WARNING, format="relay: %(levelname)s %(message)s")
    # background work: requests of the API process go first when the CPU is short
    os.nice(args.nice)
    deployment = Deployment.load(Path(args.deployment))
    chain = connect(ChainConfig(chain=args.rpc, retries=1, backoff_s=0.1,
                                request_timeout_s=5.0))
    store = OrderStore(args.db, durable_status=False)
    gateway = OrderGateway(MarketChain(chain, deployment), store,
                           GatewaySettings(relayer=args.relayer,
                                           confirmations=args.confirmations))
    try:
        gateway.lock_relay()
    except RelayLockedError as exc:
        print(f"relay: refused: {exc}", file=sys.stderr)
        store.close()
        return EXIT_LOCKED
    stopper = _Stopper(gateway)
    signal.signal(signal.SIGTERM, stopper.stop)
    signal.signal(signal.SIGINT, stopper.stop)
    if args.parent_pid is not None:
        _watch_parent(args.parent_pid, stopper)
    try:
        gateway.run(relay=True)
    finally:
        gateway.relayer.stopped()
        gateway.unlock_relay()
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
