"""The API served by a real uvicorn on loopback against anvil.

* ``gridshare serve`` as a subprocess on the session's anvil: signed orders over HTTP are
  relayed, settled and read back; bad input over a real socket leaves the server serving.
* One relay per store: a second ``serve`` or relay on the same order store is refused; SIGTERM
  to ``serve`` leaves no relay process; a relay whose ``serve`` is killed exits by itself.
* Node outage (own anvil with ``--state``, stopped and restarted on the same port): an order
  acknowledged before the API noticed the outage is kept in SQLite and relayed when the node is
  back; while the outage is known, orders are refused with 503 and nothing is stored.
* Node restarted empty (own anvil without ``--state``): 503 ``chain_reset`` for orders and
  reads, health degraded, and the order waiting for the chain is never reported relayed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
import uvicorn

from gridshare.api import create_app
from gridshare.chain.client import connect
from gridshare.chain.config import ANVIL_ARGS, ChainConfig
from market.chain import MarketChain
from market.gateway import GatewaySettings
from market.orders import SECP256K1_N, MarketDomain

from .api_helpers import Signer, deploy_market, write_bands

pytestmark = pytest.mark.anvil
REPO = Path(__file__).resolve().parents[2]


def _wait_for(predicate, timeout_s: float, what: str) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        with contextlib.suppress(requests.RequestException):
            if predicate():
                return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _free_port() -> int:
    import socket

    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: How long a test waits for the relay (niceness 10, its own process): seconds on an idle
#: machine; the bound is for a shared CI machine (a CI run with a day simulated beside it
#: once needed more than 30 s), a stuck relay still fails.
RELAY_WAIT_S = 90


def _status(base: str, url: str, reads: dict[str, str]) -> str:
    return requests.get(base + url, headers=reads, timeout=5).json()["status"]


@pytest.fixture(scope="module")
def served(anvil, tmp_path_factory):
    """``gridshare serve`` on a fresh deployment on the session's anvil."""
    chain = connect(ChainConfig(chain=anvil.url, receipt_timeout_s=20.0))
    deployment = deploy_market(chain)
    tmp = tmp_path_factory.mktemp("serve")
    deployment.save(tmp / "deployment.json")
    port = _free_port()
    log = (tmp / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gridshare.cli", "serve", "--deployment",
         str(tmp / "deployment.json"), "--rpc", anvil.url, "--port", str(port),
         "--db", str(tmp / "orders.sqlite")],
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, "CI": ""})
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(lambda: requests.get(base + "/healthz", timeout=2).status_code == 200, 60,
                  f"gridshare serve on {base}: {(tmp / 'serve.log').read_text()[-2000:]}")
        domain = MarketDomain(chain.chain_id, deployment.contracts["GridMarket"])
        yield SimpleNamespace(base=base, chain=chain, deployment=deployment, proc=proc,
                              signer=Signer(chain, deployment, domain), anvil=anvil,
                              deployment_file=tmp / "deployment.json")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _first_open(base: str) -> int:
    """The first interval the API takes orders for (by the chain's time: a test before may
    have moved the session's anvil ahead of the wall clock)."""
    return requests.get(base + "/v1/orders/schema", timeout=5).json()["interval_window"]["first"]


def test_orders_over_http_are_relayed_settled_and_read_back(served):
    base, chain, deployment, s = served.base, served.chain, served.deployment, served.signer
    interval = _first_open(base) + 9  # the chain's clock, not the wall's
    bodies = [s.body(0, interval, "sell", 800, 90_000), s.body(1, interval, "buy", 500, 250_000),
              s.body(2, interval, "buy", 200, 300_000)]
    urls = []
    for body in bodies:
        r = requests.post(base + "/v1/orders", json=body, timeout=5)
        assert r.status_code == 201, r.text
        urls.append(r.json()["status_url"])
    _wait_for(lambda: all(_status(base, u, s.reads(i)) == "relayed"
                          for i, u in enumerate(urls)), 30, "relay")
    mc = MarketChain(chain, deployment)
    write_bands(chain, mc.capacity, interval, {deployment.battery_device_id: (-5000, 5000)})
    result, receipt = mc.settle_interval(interval)
    got = requests.get(f"{base}/v1/intervals/{interval}", timeout=5).json()
    assert got["settled"] and got["orders_on_chain"] == 3
    assert got["clearing_price_micro_eur_per_kwh"] == result.clearing_price_micro_eur_per_kwh
    assert got["settlement_tx"] == receipt["transactionHash"].to_0x_hex()
    st = requests.get(f"{base}/v1/members/{s.prosumers[0].address}/statement",
                      headers=s.reads(0), timeout=5).json()
    assert st["sold_local_wh"] + st["to_battery_wh"] + st["to_grid_wh"] == 800
    assert st["net_nano_eur"] == st["onchain_balance_nano_eur"]
    bands = requests.get(f"{base}/v1/bands", params={"from": interval, "to": interval},
                         timeout=5).json()["bands"]
    assert [b["device_id"] for b in bands] == [deployment.battery_device_id]
    assert mc.replay(interval).equal


def test_bad_input_over_a_real_socket_keeps_the_server_serving(served):
    base, s, proc = served.base, served.signer, served.proc
    interval = _first_open(base) + 19  # the chain's clock, not the wall's
    waiting_before = requests.get(base + "/healthz", timeout=5).json()
    bad = [
        (requests.post(base + "/v1/orders", data=b"{not json",
                       headers={"content-type": "application/json"}, timeout=5), 400),
        (requests.post(base + "/v1/orders", data=b"x" * 100_000,
                       headers={"content-type": "application/json"}, timeout=5), 413),
        (requests.post(base + "/v1/orders",
                       json=s.body(3, interval, deadline=int(time.time()) - 5, advance=False),
                       timeout=5), 422),
        (requests.post(base + "/v1/orders",
                       json=s.body(3, interval, key=b"\x09" * 32, advance=False), timeout=5),
         422),
    ]
    for r, status in bad:
        assert r.status_code == status, r.text
        assert json.loads(r.text)["error"]["message"]
    assert proc.poll() is None
    after = requests.get(base + "/healthz", timeout=5).json()
    assert after["orders_waiting_for_chain"] == waiting_before["orders_waiting_for_chain"]
    ok = requests.post(base + "/v1/orders", json=s.body(3, interval), timeout=5)
    assert ok.status_code == 201, ok.text


def _variant(body: dict, r_s_v) -> dict:
    """``body`` with its signature's (r, s, v) changed by ``r_s_v``."""
    sig = bytes.fromhex(body["signature"][2:])
    r, s_, v = r_s_v(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big"), sig[64])
    return body | {"signature": "0x" + (r.to_bytes(32, "big") + s_.to_bytes(32, "big")
                                        + bytes([v])).hex()}


def test_hostile_orders_get_their_4xx_or_are_relayed(served):
    """On anvil through a real server: each hostile order is refused with its status, code and
    field, or normalised and relayed; ordinary orders still reach the chain after them."""
    base, s, T = served.base, served.signer, served.deployment.interval_s
    u64, n = 2**64 - 1, SECP256K1_N
    schema = requests.get(base + "/v1/orders/schema", timeout=5).json()
    first, last = schema["interval_window"]["first"], schema["interval_window"]["last"]
    ok = first + 2
    refused = [
        (s.body(4, first - 1, deadline=u64, advance=False), 422, "interval_out_of_window"),
        (s.body(4, last + 1, deadline=u64, advance=False), 422, "interval_out_of_window"),
        (s.body(4, u64, deadline=u64, advance=False), 422, "interval_out_of_window"),
        (s.body(4, ok, deadline=ok * T - 1, advance=False), 422, "deadline_before_interval"),
        (s.body(4, ok, energy_wh=schema["max_energy_wh"] + 1, advance=False), 422,
         "energy_too_large"),
        (s.body(4, ok, price=u64, advance=False), 422, "price_out_of_bounds"),
        (_variant(s.body(4, ok, advance=False), lambda r, s_, v: (r, s_, 2)), 422,
         "invalid_signature"),
        (_variant(s.body(4, ok, advance=False), lambda r, s_, v: (r, 0, v)), 422,
         "invalid_signature"),
    ]
    for body, status, code in refused:
        r = requests.post(base + "/v1/orders", json=body, timeout=5)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
        assert r.json()["error"]["field"]
    accepted = [
        _variant(s.body(4, ok), lambda r, s_, v: (r, s_, v - 27)),  # v 0/1
        _variant(s.body(4, ok), lambda r, s_, v: (r, n - s_, 55 - v)),  # the high-s twin
        s.body(4, ok, deadline=u64),  # "never expires"
        s.body(5, ok),  # an ordinary order after them all
    ]
    urls = []
    for body in accepted:
        r = requests.post(base + "/v1/orders", json=body, timeout=5)
        assert r.status_code == 201, r.text
        urls.append((r.json()["status_url"], s.reads(4 if body["prosumer"] ==
                                                     s.prosumers[4].address else 5)))
    _wait_for(lambda: all(_status(base, u, h) == "relayed" for u, h in urls), RELAY_WAIT_S, "relay")


class _Server:
    """uvicorn in a thread of this process (so the test can reach the gateway)."""

    def __init__(self, app, port: int) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        _wait_for(lambda: self.server.started, 20, "uvicorn start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(20)


def _start_anvil(binary: str, port: int, state: Path | None, log: Path) -> subprocess.Popen:
    """anvil on ``port`` with the project's flags, keeping its state in ``state`` (None: a
    node that starts empty every time)."""
    keep = ["--state", str(state)] if state is not None else []
    proc = subprocess.Popen([binary, "--host", "127.0.0.1", "--port", str(port), *ANVIL_ARGS,
                             *keep], stdout=log.open("ab"), stderr=subprocess.STDOUT)
    _wait_for(lambda: requests.post(f"http://127.0.0.1:{port}", json={
        "jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}, timeout=1).ok,
        30, "anvil start")
    return proc


def test_orders_survive_a_node_outage_or_are_refused_with_503(anvil, tmp_path):
    binary = anvil.process.args[0]
    port = _free_port()
    state, log = tmp_path / "anvil-state.json", tmp_path / "anvil.log"
    node = _start_anvil(binary, port, state, log)
    try:
        chain = connect(ChainConfig(chain=f"http://127.0.0.1:{port}", retries=0,
                                    request_timeout_s=2.0, receipt_timeout_s=20.0))
        deployment = deploy_market(chain)
        settings = GatewaySettings(cache_ttl_s=600.0, interval_ttl_s=600.0, probe_interval_s=0.2)
        app = create_app(chain, deployment, db_path=tmp_path / "orders.sqlite",
                         settings=settings)
        gw = app.state.api.gateway
        s = Signer(chain, deployment, gw.domain)
        interval = int(time.time()) // deployment.interval_s + 5
        api_port = _free_port()
        base = f"http://127.0.0.1:{api_port}"
        with _Server(app, api_port):
            first = requests.post(base + "/v1/orders", json=s.body(0, interval), timeout=5)
            assert first.status_code == 201
            _wait_for(lambda: _status(base, first.json()["status_url"], s.reads(0))
                      == "relayed", 30, "first relay")
            # the node goes away before the API notices (relayer paused): the order (same
            # prosumer and interval, so no uncached read) is acknowledged from the cached
            # contract state and kept in SQLite
            gw.stop()
            node.send_signal(signal.SIGTERM)
            node.wait(timeout=20)
            kept = requests.post(base + "/v1/orders", json=s.body(0, interval), timeout=5)
            assert kept.status_code == 201, kept.text
            assert _status(base, kept.json()["status_url"], s.reads(0)) == "pending"
            # once the outage is known, orders are refused before anything is stored
            gw.start()
            _wait_for(lambda: requests.get(base + "/healthz", timeout=5).status_code == 503,
                      20, "healthz 503")
            assert not gw.chain_ok
            waiting = gw.store.counts()
            refused = requests.post(base + "/v1/orders", json=s.body(0, interval, advance=False),
                                    timeout=5)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "chain_unavailable"
            assert gw.store.counts() == waiting
            # the node returns with its state: the kept order is relayed, new ones accepted
            node = _start_anvil(binary, port, state, log)
            _wait_for(lambda: _status(base, kept.json()["status_url"], s.reads(0))
                      == "relayed", 60, "relay after the outage")
            again = requests.post(base + "/v1/orders", json=s.body(0, interval), timeout=5)
            assert again.status_code == 201, again.text
            _wait_for(lambda: _status(base, again.json()["status_url"], s.reads(0))
                      == "relayed", 30, "relay of a new order")
            placed = {"0x" + p.digest.hex() for p in MarketChain(chain, deployment)
                      .placed_orders(interval)}
            assert placed == {first.json()["order_hash"], kept.json()["order_hash"],
                              again.json()["order_hash"]}
    finally:
        if node.poll() is None:
            node.terminate()
            node.wait(timeout=20)


# ---- one relay per store, and none left behind
def _serve_cmd(served, db: Path, port: int, relayer: str = "battery") -> list[str]:
    """``gridshare serve`` on the module's deployment, relaying with ``relayer``'s key."""
    return [sys.executable, "-m", "gridshare.cli", "serve", "--deployment",
            str(served.deployment_file), "--rpc", served.anvil.url, "--port", str(port), "--db",
            str(db), "--relayer", relayer]


def _serve(served, db: Path, log: Path) -> subprocess.Popen:
    port = _free_port()
    proc = subprocess.Popen(_serve_cmd(served, db, port), stdout=log.open("ab"),
                            stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, "CI": ""})
    proc.base = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    return proc


def _relay_pid(log: Path) -> int:
    found: list[int] = []

    def seen() -> bool:
        for line in log.read_text(errors="replace").splitlines():
            if "relay: process " in line:
                found.append(int(line.rsplit("relay: process ", 1)[1].split()[0]))
        return bool(found)

    _wait_for(seen, 60, f"the relay's pid in {log}")
    return found[0]


def _gone(pid: int, timeout_s: float) -> bool:
    """True once ``pid`` has exited (a zombie waiting for its reaper counts as exited)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z":
            return True
        time.sleep(0.1)
    return False


def _relay_cmd(served, db: Path, relayer: str) -> list[str]:
    return [sys.executable, "-m", "market.gateway.relay", "--deployment",
            str(served.deployment_file), "--rpc", served.anvil.url, "--db", str(db),
            "--relayer", relayer]


def test_one_relay_per_store_and_key_and_none_left_after_sigterm(served, tmp_path):
    db, log = tmp_path / "orders.sqlite", tmp_path / "serve.log"
    first = _serve(served, db, log)
    try:
        _wait_for(lambda: requests.get(first.base + "/healthz", timeout=2).ok, 60, "serve")
        relay = _relay_pid(log)
        # another serve with the same relayer key (another store): refused before it starts
        other = subprocess.run(_serve_cmd(served, tmp_path / "other.sqlite", _free_port()),
                               capture_output=True, text=True, timeout=120, cwd=REPO)
        assert other.returncode == 3, other.stderr
        assert f"another relay (process {relay})" in other.stderr and "key" in other.stderr
        # another relay on the same store (another key): refused
        second = subprocess.run(_relay_cmd(served, db, "oracle"), capture_output=True,
                                text=True, timeout=120, cwd=REPO)
        assert second.returncode == 3 and "the order store" in second.stderr, second.stderr
        first.send_signal(signal.SIGTERM)  # what systemd and docker send
        first.wait(timeout=60)
        assert _gone(relay, 15), "the relay outlived gridshare serve"
    finally:
        if first.poll() is None:
            first.kill()


def test_the_relay_exits_when_serve_is_killed(served, tmp_path):
    log = tmp_path / "serve.log"
    server = _serve(served, tmp_path / "orders.sqlite", log)
    try:
        relay = _relay_pid(log)
        _wait_for(lambda: requests.get(server.base + "/healthz", timeout=2).ok, 60, "serve")
    finally:
        server.kill()  # no chance to clean up: SIGKILL
        server.wait(timeout=30)
    assert _gone(relay, 15), "the relay outlived its killed server"


# ---- a node that restarted empty
def test_a_node_restarted_empty_is_a_chain_reset(anvil, tmp_path):
    binary, port, log = anvil.process.args[0], _free_port(), tmp_path / "anvil.log"
    node = _start_anvil(binary, port, None, log)
    try:
        chain = connect(ChainConfig(chain=f"http://127.0.0.1:{port}", retries=0,
                                    request_timeout_s=2.0, receipt_timeout_s=20.0))
        deployment = deploy_market(chain)
        app = create_app(chain, deployment, db_path=tmp_path / "orders.sqlite",
                         settings=GatewaySettings(probe_interval_s=0.2, identity_every_s=0.5))
        gw = app.state.api.gateway
        s = Signer(chain, deployment, gw.domain)
        interval = next(s.intervals)
        api_port = _free_port()
        base = f"http://127.0.0.1:{api_port}"
        with _Server(app, api_port):
            first = requests.post(base + "/v1/orders", json=s.body(0, interval), timeout=5)
            url = first.json()["status_url"]
            _wait_for(lambda: _status(base, url, s.reads(0)) == "relayed", RELAY_WAIT_S, "relay")
            gw.stop()  # the relay pauses; one more order waits for the chain
            waiting = requests.post(base + "/v1/orders", json=s.body(1, interval), timeout=5)
            assert waiting.status_code == 201, waiting.text
            node.terminate()
            node.wait(timeout=20)
            node = _start_anvil(binary, port, None, log)  # same URL, same chain id, empty
            gw.start()
            _wait_for(lambda: requests.get(base + "/healthz", timeout=5).json()["chain_state"]
                      == "reset", 30, "health to see the reset")
            health = requests.get(base + "/healthz", timeout=5)
            assert health.status_code == 503
            assert any("chain reset" in p for p in health.json()["problems"])
            for r in (requests.post(base + "/v1/orders", json=s.body(2, interval), timeout=5),
                      requests.get(f"{base}/v1/intervals/{interval}", timeout=5)):
                assert r.status_code == 503 and r.json()["error"]["code"] == "chain_reset", r.text
            time.sleep(1.0)  # relay rounds run: nothing is sent to the empty node
            assert _status(base, waiting.json()["status_url"], s.reads(1)) == "pending"
            assert chain.w3.eth.get_transaction_count(gw.relayer.account.address) == 0
            assert _status(base, url, s.reads(0)) == "relayed"  # stored history is kept
    finally:
        if node.poll() is None:
            node.terminate()
            node.wait(timeout=20)
