"""Order API throughput: signed orders accepted per second, p50/p99 latency, 50 clients.

    python bench/api.py [--clients 50] [--rate 500] [--rpc URL]

What runs (a bounded run, about a minute, that stops by itself):

1. an anvil node (npm ``@foundry-rs/anvil-linux-amd64``, automine; or ``--rpc URL``), the
   default feeder deployed, prosumers registered up to ``--clients``;
2. ``gridshare serve`` in its own process on a loopback port (uvicorn; SQLite order store;
   the relay to ``submitOrderSigned`` in a process of its own);
3. ``--clients`` concurrent clients (asyncio, one keep-alive HTTP/1.1 connection and one
   prosumer each; orders pre-signed, signing is not timed). An order counts as accepted on
   HTTP 201 = validated (signature, nonce, deadline, registered prosumer, open interval, price
   bounds) and committed to SQLite (WAL, synchronous=FULL, group commit);

   * saturation: every client posts its orders back to back (closed loop): the most orders
     per second the server accepts;
   * at the target rate: the clients together offer ``--rate`` orders/s on a fixed schedule
     (open loop; a late request's latency counts from its scheduled time, so a stalled server
     is not hidden): p50/p99 latency at that load;

4. the relay is awaited until every accepted order is on-chain (``OrderPlaced``) or a time
   limit passes; its duration is reported for information;
5. the peer, measured in the same run on the same node: one client placing orders with its
   own ``submitOrderSigned`` transaction each, waiting for the receipt (web3 via
   ``gridshare.chain.client.Chain.transact``), i.e. what a prosumer does without the API.

Targets: >= 500 accepted orders/s at saturation, p99 <= 100 ms at 500 orders/s offered by 50
clients. The machine is shared: numbers vary from run to run with the other load on it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gridshare.chain.client import connect  # noqa: E402
from gridshare.chain.config import ChainConfig  # noqa: E402
from gridshare.chain.deploy import DeployParams, deploy  # noqa: E402
from market.chain import MarketChain  # noqa: E402
from market.orders import MarketDomain, Order, Side, sign_order  # noqa: E402

TARGET_ORDERS_PER_S = 500.0
TARGET_P99_MS = 100.0
ANVIL = REPO / "node_modules" / ".bin" / "anvil"


def free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout_s: float, method: str = "GET", **kwargs: object) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        with contextlib.suppress(requests.RequestException):
            if requests.request(method, url, timeout=2, **kwargs).status_code < 500:  # type: ignore[arg-type]
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout_s} s")


def start_anvil(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = os.environ.get("GRIDSHARE_ANVIL") or str(ANVIL)
    if not Path(binary).is_file():
        raise SystemExit(f"no anvil at {binary}: run `npm ci` or pass --rpc URL")
    port = free_port()
    proc = subprocess.Popen([binary, "--host", "127.0.0.1", "--port", str(port), "--hardfork",
                             "cancun"], stdout=(tmp / "anvil.log").open("wb"),
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_http(url, 30, "POST", json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId",
                                     "params": []})
    return proc, url


def http_request(body: bytes, host: str) -> bytes:
    return (b"POST /v1/orders HTTP/1.1\r\nHost: " + host.encode() +
            b"\r\nContent-Type: application/json\r\nContent-Length: " +
            str(len(body)).encode() + b"\r\n\r\n" + body)


async def read_response(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response (Content-Length body); its status code."""
    status = int((await reader.readline()).split()[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def client(host: str, port: int, requests_: list[bytes], latencies_s: list[float],
                 statuses: list[int]) -> None:
    """Send ``requests_`` one after another on one keep-alive connection."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for raw in requests_:
            t0 = time.perf_counter()
            writer.write(raw)
            await writer.drain()
            status = await read_response(reader)
            latencies_s.append(time.perf_counter() - t0)
            statuses.append(status)
    finally:
        writer.close()


async def load(host: str, port: int, per_client: list[list[bytes]]
               ) -> tuple[float, list[float], list[int]]:
    latencies: list[float] = []
    statuses: list[int] = []
    t0 = time.perf_counter()
    await asyncio.gather(*(client(host, port, reqs, latencies, statuses) for reqs in per_client))
    return time.perf_counter() - t0, latencies, statuses


def percentile_ms(latencies_s: list[float], q: float) -> float:
    if not latencies_s:
        return float("nan")
    return float(np.percentile(np.asarray(latencies_s) * 1000.0, q))


async def paced_client(host: str, port: int, requests_: list[bytes], start: float,
                       period_s: float, latencies_s: list[float], statuses: list[int]) -> None:
    """Send request k at ``start + k * period_s`` (or at once when late); latency from the
    scheduled time."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for k, raw in enumerate(requests_):
            due = start + k * period_s
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(raw)
            await writer.drain()
            status = await read_response(reader)
            latencies_s.append(time.perf_counter() - due)
            statuses.append(status)
    finally:
        writer.close()


async def paced_load(host: str, port: int, per_client: list[list[bytes]], rate_per_s: float
                     ) -> tuple[float, list[float], list[int]]:
    latencies: list[float] = []
    statuses: list[int] = []
    period_s = len(per_client) / rate_per_s
    t0 = time.perf_counter() + 0.2
    offsets = [t0 + i * period_s / len(per_client) for i in range(len(per_client))]
    await asyncio.gather(*(paced_client(host, port, reqs, off, period_s, latencies, statuses)
                           for reqs, off in zip(per_client, offsets, strict=True)))
    return time.perf_counter() - t0, latencies, statuses


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--saturation-orders", type=int, default=30,
                    help="orders per client in the closed-loop phase")
    ap.add_argument("--rate", type=float, default=TARGET_ORDERS_PER_S,
                    help="orders/s offered by all clients together in the paced phase")
    ap.add_argument("--paced-s", type=float, default=5.0, help="length of the paced phase")
    ap.add_argument("--peer-orders", type=int, default=40)
    ap.add_argument("--rpc", default=None, help="JSON-RPC node (default: start anvil)")
    ap.add_argument("--relay-timeout-s", type=float, default=120.0)
    args = ap.parse_args(argv)
    if args.clients < 1 or args.saturation_orders < 2 or args.rate <= 0 or args.paced_s <= 0:
        raise SystemExit("--clients >= 1, --saturation-orders >= 2, --rate and --paced-s > 0")
    paced_per_client = max(1, round(args.rate * args.paced_s / args.clients))

    tmp = Path(tempfile.mkdtemp(prefix="gridshare-bench-api-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        if args.rpc:
            rpc = args.rpc
        else:
            node, rpc = start_anvil(tmp)
            procs.append(node)
        chain = connect(ChainConfig(chain=rpc, receipt_timeout_s=60.0))
        deployment = deploy(chain, DeployParams())
        mc = MarketChain(chain, deployment)
        head_end = deployment.prosumers[0]["meter_role"]
        for i in range(len(deployment.prosumers), args.clients + 1):  # one more for the peer
            device_id = 100_000 + i  # each member's connection meter, posted by the head-end
            chain.transact(mc.capacity.functions.registerDevice(
                device_id, 0, 2, chain.keys.address("deployer"), chain.keys.address(head_end),
                0, 15_000), "deployer")
            chain.transact(mc.market.functions.registerProsumer(
                chain.keys.address(f"prosumer_{i}"), device_id), "deployer")
        deployment.save(tmp / "deployment.json")
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "gridshare.cli", "serve", "--deployment",
             str(tmp / "deployment.json"), "--rpc", rpc, "--port", str(port), "--db",
             str(tmp / "orders.sqlite")],
            stdout=(tmp / "serve.log").open("wb"), stderr=subprocess.STDOUT, cwd=REPO)
        procs.append(server)
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/healthz", 60)

        domain = MarketDomain(chain.chain_id, deployment.contracts["GridMarket"])
        interval = int(time.time()) // deployment.interval_seconds + 4
        deadline = int(time.time()) + 3600
        host = f"127.0.0.1:{port}"
        per_client: list[list[bytes]] = []
        n_orders = 1 + args.saturation_orders + paced_per_client
        t_sign = time.perf_counter()
        for c in range(args.clients):
            account = chain.keys.account(f"prosumer_{c}")
            reqs = []
            for n in range(n_orders):
                side = Side.SELL if (c + n) % 2 else Side.BUY
                price = 100_000 + 1000 * (c % 50)
                order = Order(account.address, interval, side, 100 + n, price, n, deadline)
                sig = sign_order(order, domain, account.key)
                body = json.dumps({
                    "prosumer": account.address, "interval": interval,
                    "side": "sell" if side == Side.SELL else "buy", "energy_wh": 100 + n,
                    "price_micro_eur_per_kwh": price, "nonce": n, "deadline_unix_s": deadline,
                    "signature": "0x" + sig.hex()}).encode()
                reqs.append(http_request(body, host))
            per_client.append(reqs)
        sign_s = time.perf_counter() - t_sign

        # warm-up: the first order of every client (fills the server's caches), not timed
        _, _, warm = asyncio.run(load("127.0.0.1", port, [r[:1] for r in per_client]))
        sat_s, sat_lat, sat_st = asyncio.run(load(
            "127.0.0.1", port, [r[1:1 + args.saturation_orders] for r in per_client]))
        pace_s, pace_lat, pace_st = asyncio.run(paced_load(
            "127.0.0.1", port, [r[1 + args.saturation_orders:] for r in per_client], args.rate))
        statuses = warm + sat_st + pace_st
        accepted = sum(1 for x in statuses if x == 201)
        sat_rate = sum(1 for x in sat_st if x == 201) / sat_s
        pace_rate = sum(1 for x in pace_st if x == 201) / pace_s

        # relay: wait until every accepted order is on-chain
        t_relay = time.perf_counter()
        relay_end = time.monotonic() + args.relay_timeout_s
        waiting = None
        while time.monotonic() < relay_end:
            waiting = requests.get(base + "/healthz", timeout=10).json()["orders_waiting_for_chain"]
            if waiting == 0:
                break
            time.sleep(0.25)
        relay_s = time.perf_counter() - t_relay
        on_chain = len(mc.placed_orders(interval))

        # the peer: one prosumer, one submitOrderSigned transaction per order
        peer = chain.keys.account(f"prosumer_{args.clients}")
        peer_lat = []
        t_peer = time.perf_counter()
        for n in range(args.peer_orders):
            order = Order(peer.address, interval, Side.BUY, 100, 100_000, n, deadline)
            sig = sign_order(order, domain, peer.key)
            t0 = time.perf_counter()
            chain.transact(mc.market.functions.submitOrderSigned(order.as_abi_tuple(), sig),
                           "deployer")
            peer_lat.append(time.perf_counter() - t0)
        peer_rate = args.peer_orders / (time.perf_counter() - t_peer)
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    peer50, peer99 = percentile_ms(peer_lat, 50), percentile_ms(peer_lat, 99)
    rows = [
        ("saturation: accepted orders/s", sat_rate, peer_rate),
        ("saturation: p50 latency ms", percentile_ms(sat_lat, 50), peer50),
        ("saturation: p99 latency ms", percentile_ms(sat_lat, 99), peer99),
        (f"at {args.rate:.0f}/s offered: accepted orders/s", pace_rate, peer_rate),
        (f"at {args.rate:.0f}/s offered: p50 latency ms", percentile_ms(pace_lat, 50), peer50),
        (f"at {args.rate:.0f}/s offered: p99 latency ms", percentile_ms(pace_lat, 99), peer99),
    ]
    print(f"bench/api.py: {args.clients} clients on {'anvil' if not args.rpc else args.rpc}, "
          f"{args.saturation_orders} orders each back to back, then {paced_per_client} each at "
          f"{args.rate:.0f} orders/s together; pre-signing took {sign_s:.1f} s")
    print()
    header = f"{'':42}{'API (201 = stored)':>20}{'own tx per order':>18}{'API/peer':>10}"
    print(header)
    print("-" * len(header))
    for label, api_value, peer_value in rows:
        print(f"{label:42}{api_value:>20.1f}{peer_value:>18.1f}{api_value / peer_value:>10.2f}")
    print(f"{'requests / non-201 answers':42}{len(statuses):>20}{len(statuses) - accepted:>18}")
    print()
    p99_paced = percentile_ms(pace_lat, 99)
    ok_rate, ok_p99 = sat_rate >= TARGET_ORDERS_PER_S, p99_paced <= TARGET_P99_MS
    ok_offered = pace_rate >= 0.95 * args.rate
    print(f"target accepted orders/s >= {TARGET_ORDERS_PER_S:.0f} (saturation): {sat_rate:.0f}  "
          f"{'PASS' if ok_rate else 'FAIL'}")
    print(f"target p99 <= {TARGET_P99_MS:.0f} ms at {args.rate:.0f} orders/s from "
          f"{args.clients} clients: {p99_paced:.1f} ms (kept up: {pace_rate:.0f}/s)  "
          f"{'PASS' if ok_p99 and ok_offered else 'FAIL'}")
    print(f"relay (information): {accepted} accepted orders, all on-chain {relay_s:.1f} s after "
          f"the last was accepted ({on_chain} OrderPlaced in the interval, {waiting} waiting)")
    return 0 if ok_rate and ok_p99 and ok_offered and accepted == len(statuses) else 1


if __name__ == "__main__":
    sys.exit(main())
