"""The order relay under faults: failure isolation, confirmations, reorgs, restarts, a reset chain.

Driven through ``OrderGateway`` (the code path of ``POST /v1/orders``) with explicit relay
rounds. The failure-isolation test runs on the embedded chain (a revert surfaces when the
transaction is sent) and on anvil (it is mined with status 0 and read back from its receipt).
"""

from __future__ import annotations

import time

import pytest

from gridshare.chain.client import connect
from gridshare.chain.deploy import DeployParams, deploy
from gridshare.chain.identity import ChainResetError
from market.chain import MarketChain
from market.gateway import GatewaySettings, OrderGateway, OrderStore
from market.orders import Order, Side, sign_order

DEPLOY = DeployParams(min_price_eur_per_kwh=0.05, max_price_eur_per_kwh=0.40)


class _Market:
    """A deployment with a gateway and signing helpers for prosumers 0..3."""

    def __init__(self, chain, db, settings: GatewaySettings | None = None,
                 deployment=None) -> None:
        self.chain = chain
        self.deployment = deployment or deploy(chain, DEPLOY)
        self.mc = MarketChain(chain, self.deployment)
        self.gw = OrderGateway(self.mc, OrderStore(db), settings)
        self.keys = [chain.keys.account(f"prosumer_{i}") for i in range(4)]
        self.T = self.deployment.interval_s

    def current(self) -> int:
        return self.gw.watch.now_unix_s() // self.T

    def order(self, who: int, interval: int, nonce: int | None = None,
              deadline: int | None = None) -> tuple[Order, bytes]:
        key = self.keys[who]
        nonce = self.gw.expected_nonce(key.address) if nonce is None else nonce
        deadline = (interval + 2) * self.T if deadline is None else deadline
        order = Order(key.address, interval, Side.BUY, 100, 100_000, nonce, deadline)
        return order, sign_order(order, self.mc.domain, key.key)

    def submit(self, who: int, interval: int, **kwargs) -> bytes:
        return self.gw.submit(*self.order(who, interval, **kwargs)).digest

    def row(self, digest: bytes):
        return self.gw.store.by_digest(digest)

    def placed(self, interval: int) -> list[bytes]:
        return [p.digest for p in self.mc.placed_orders(interval)]


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    return _Market(connect(), tmp_path_factory.mktemp("relay") / "orders.sqlite")


def _rounds(gw, n: int = 3) -> None:
    for _ in range(n):
        gw.relay_once()


def test_a_failed_order_blocks_nobody_and_its_successor_is_reported(chain, tmp_path):
    """A's order k is refused on-chain (A was removed after acceptance, the API's cache still
    took k+1); A's order k+1 is failed without a transaction, naming the nonce to sign again
    with and why; B's orders are relayed all the same; A's order signed again with nonce k is
    accepted and relayed."""
    m = _Market(chain, tmp_path / "o.sqlite")
    interval = m.current() + 2
    a_addr = m.keys[0].address
    a0, b0 = m.submit(0, interval), m.submit(1, interval)
    m.chain.transact(m.mc.market.functions.removeProsumer(a_addr), "deployer")
    m.gw.relay_once()  # A's k and B's order go out; A's reverts
    a1, b1 = m.submit(0, interval), m.submit(1, interval)
    _rounds(m.gw, 4)
    first, second = m.row(a0), m.row(a1)
    assert first.status == "failed" and "NotProsumer" in first.error
    assert second.status == "failed" and second.tx_hash is None
    assert "nonce gap" in second.error and "sign this order again with nonce 0" in second.error
    assert "NotProsumer" in second.error  # names the failure that broke the sequence
    assert {m.row(b).status for b in (b0, b1)} == {"relayed"}
    assert m.placed(interval) == [b0, b1]
    meter = m.deployment.prosumers[0]["device_id"]
    m.chain.transact(m.mc.market.functions.registerProsumer(a_addr, meter), "deployer")
    m.gw._registered.forget(a_addr)
    again = m.submit(0, interval, nonce=0)
    m.gw.flush()
    assert m.row(again).status == "relayed" and m.placed(interval) == [b0, b1, again]


def test_relayed_only_after_the_configured_confirmations(tmp_path):
    chain = connect()
    m = _Market(chain, tmp_path / "o.sqlite", GatewaySettings(confirmations=2))
    digest = m.submit(2, m.current() + 1)
    _rounds(m.gw, 2)
    row = m.row(digest)
    assert row.status == "sent" and row.block_number is not None  # mined, not yet confirmed
    chain.advance_time(1)  # one more block
    _rounds(m.gw, 2)
    assert m.row(digest).status == "sent"
    chain.advance_time(1)
    _rounds(m.gw, 2)
    assert m.row(digest).status == "relayed" and m.row(digest).block_number == row.block_number


def test_a_reorg_sends_the_dropped_order_again(market):
    """The block holding relayed orders (one batch) is dropped (snapshot revert): the relay sees
    the reorg, finds the transaction gone, sends the orders again; each is placed once."""
    m = market
    interval = m.current() + 3
    snapshot = m.chain.snapshot()
    digest, other = m.submit(3, interval), m.submit(2, interval)
    m.gw.flush()
    assert m.row(digest).tx_hash == m.row(other).tx_hash  # one batch
    old_block = m.row(digest).block_number
    m.chain.revert(snapshot)
    m.chain.advance_time(1)  # the new branch: other blocks at those heights
    m.chain.advance_time(1)
    _rounds(m.gw, 3)  # flush() would trust the stale 'relayed': the relay loop runs rounds
    row = m.row(digest)
    assert row.status == "relayed" and m.placed(interval) == [digest, other]
    assert m.row(other).status == "relayed"
    assert row.block_number != old_block or row.tx_hash


def test_sent_orders_are_resolved_after_a_restart(market, tmp_path):
    """A relay that stopped after sending (orders 'sent', not yet observed) is followed by a
    new one on the same store: the orders are found on-chain by their OrderPlaced, none is
    sent twice."""
    m = market
    interval = m.current() + 4
    digests = [m.submit(who, interval) for who in (0, 1)]
    m.gw.relayer.round()  # observe (nothing), then send
    assert {m.row(d).status for d in digests} == {"sent"}
    nonce_before = m.chain.w3.eth.get_transaction_count(m.gw.relayer.account.address)
    fresh = OrderGateway(m.mc, OrderStore(m.gw.store.path))
    fresh.flush()
    assert {fresh.store.by_digest(d).status for d in digests} == {"relayed"}
    assert m.chain.w3.eth.get_transaction_count(m.gw.relayer.account.address) == nonce_before
    assert sorted(m.placed(interval)) == sorted(digests)


def test_a_reset_chain_gets_no_orders_and_nothing_is_relayed(market, tmp_path):
    """The same deployment (same addresses) on a new chain: the store's recorded identity does
    not match, so orders are refused with ChainResetError and the relay sends nothing."""
    m = market
    db = tmp_path / "o.sqlite"
    interval = m.current() + 5
    first = _Market(m.chain, db, deployment=m.deployment)
    waiting = first.submit(2, interval)  # records the chain's identity, stays pending
    other = connect()
    copy = deploy(other, DEPLOY)
    assert copy.contracts == m.deployment.contracts
    reset = _Market(other, db, deployment=copy)
    with pytest.raises(ChainResetError, match="chain reset"):
        reset.submit(2, reset.current() + 1)
    report = reset.gw.relay_once()
    assert report.sent == 0 and reset.row(waiting).status == "pending"
    assert reset.gw.relayer.status.state == "chain_reset"
    health = reset.gw.health()
    assert health.chain == "reset" and any("chain reset" in p for p in health.problems)
    assert not reset.placed(interval)



def _rpc(chain, method: str, *params) -> object:
    return chain._rpc(method, list(params))


@pytest.fixture
def own_anvil(anvil, tmp_path):
    """A fresh anvil (same binary and flags as the session's) this test may stop mining on."""
    from tests.conftest import _stop, start_anvil

    node = start_anvil(anvil.process.args[0], tmp_path)
    try:
        yield node
    finally:
        _stop(node.process)


@pytest.mark.anvil
def test_a_stalled_pool_recovers(own_anvil, tmp_path):
    """Mining stopped: (1) the node loses the relay's transactions (pool dropped): they are
    re-broadcast; (2) a transaction stays unmined: it is replaced with higher fees; (3) the
    first of two is lost: both are re-broadcast; (4) a transaction of another sender with the
    same key is lost below the relay's (a nonce gap nothing of the relay's fills): the relay's
    are re-signed from the mined nonce. After each, every order is placed exactly once and
    health is ok again. One order per transaction, so that "two transactions" are two."""
    from gridshare.chain.config import ChainConfig

    chain = connect(ChainConfig(chain=own_anvil.url, receipt_timeout_s=20.0))
    m = _Market(chain, tmp_path / "o.sqlite", GatewaySettings(stall_s=0.3, orders_per_tx=1))
    relayer = m.gw.relayer.account.address
    interval = m.current() + 2
    _rpc(chain, "evm_setIntervalMining", 0)
    _rpc(chain, "evm_setAutomine", False)

    def stall(n_rounds: int, then=None) -> None:
        for _ in range(n_rounds):
            time.sleep(0.4)
            m.gw.relay_once()
        assert m.gw.relayer.status.state == "stalled"
        if then is not None:
            then()
        _rpc(chain, "evm_mine")
        _rounds(m.gw, 2)
        assert m.gw.relayer.status.state == "running"

    digests = [m.submit(0, interval), m.submit(1, interval)]
    m.gw.relay_once()
    _rpc(chain, "anvil_dropAllTransactions")
    stall(1)  # re-broadcast
    assert m.gw.relayer.status.rebroadcast >= 2
    digests.append(m.submit(0, interval))
    m.gw.relay_once()
    stall(2)  # re-broadcast, then replacement
    assert m.gw.relayer.status.replaced >= 1
    digests += [m.submit(1, interval), m.submit(2, interval)]
    m.gw.relay_once()
    first = m.row(digests[3]).tx_hash
    _rpc(chain, "anvil_dropTransaction", first)
    stall(1)  # both re-broadcast
    transfer, _ = chain.send({"to": relayer, "value": 1, "gas": 21_000}, "settler")
    digests.append(m.submit(2, interval))
    m.gw.relay_once()
    _rpc(chain, "anvil_dropTransaction", transfer.to_0x_hex())
    replaced = m.gw.relayer.status.replaced
    stall(1)  # the gap below the relay's transaction: re-signed from the mined nonce
    assert m.gw.relayer.status.replaced == replaced + 1
    assert {m.row(d).status for d in digests} == {"relayed"}
    assert sorted(m.placed(interval)) == sorted(digests)
    assert chain.w3.eth.get_transaction_count(relayer) == chain.w3.eth.get_transaction_count(
        relayer, "pending")
    assert not m.gw.health().problems


def test_batch_calldata_is_the_abi_encoding(market):
    """The relay's call data equals web3's for ordinary and extreme orders."""
    from hexbytes import HexBytes

    from market.gateway.relayer import batch_calldata

    top = 2**64 - 1
    orders = [market.order(0, market.current() + 1, nonce=7),
              (Order(market.keys[1].address, top, Side.SELL, top, top, top, top), b"\xff" * 65)]
    fn = market.mc.market.functions.submitOrdersSigned([o.as_abi_tuple() for o, _ in orders],
                                                       [s for _, s in orders])
    assert batch_calldata(orders) == bytes(HexBytes(fn._encode_transaction_data()))


def test_a_reverted_batch_goes_out_one_order_per_transaction(own_anvil, tmp_path):
    """Orders share a transaction; when it reverts as a whole (here: out of gas), no order is
    failed for it: each goes out alone, and only its own transaction's outcome fails it."""
    from gridshare.chain.config import ChainConfig

    chain = connect(ChainConfig(chain=own_anvil.url, receipt_timeout_s=20.0))
    m = _Market(chain, tmp_path / "o.sqlite", GatewaySettings(relay_gas=40_000))
    interval = m.current() + 2
    digests = [m.submit(0, interval), m.submit(1, interval)]
    m.gw.relay_once()
    batch_tx = {m.row(d).tx_hash for d in digests}
    assert len(batch_tx) == 1 and None not in batch_tx  # one transaction for both
    _rounds(m.gw, 6)
    rows = [m.row(d) for d in digests]
    assert [r.status for r in rows] == ["failed", "failed"], rows
    assert len({r.tx_hash for r in rows} | batch_tx) == 3  # each in a transaction of its own
    assert m.placed(interval) == []
    assert m.gw.relayer.status.failed == 2


@pytest.mark.parametrize(("field", "value", "match"), [
    ("orders_per_tx", 0, "orders_per_tx must be in 1..200"),
    ("orders_per_tx", -1, "orders_per_tx must be in 1..200"),
    ("orders_per_tx", 201, "MAX_ORDERS_PER_BATCH"),
    ("orders_per_tx", 2**256, "orders_per_tx"),
    ("relay_gas", 20_999, "relay_gas"),
])
def test_relay_settings_out_of_range_are_refused(field, value, match):
    with pytest.raises(ValueError, match=match):
        GatewaySettings(**{field: value})


def test_the_relays_batch_limit_is_the_contracts(market):
    from market.gateway.relayer import MAX_ORDERS_PER_TX

    assert market.chain.call(market.mc.market.functions.MAX_ORDERS_PER_BATCH()) == \
        MAX_ORDERS_PER_TX
    assert GatewaySettings(orders_per_tx=MAX_ORDERS_PER_TX).orders_per_tx == MAX_ORDERS_PER_TX


@pytest.mark.anvil
def test_a_stalled_batch_is_rebroadcast_and_placed_once(own_anvil, tmp_path):
    """Mining stopped and the pool dropped with a batch of three orders in it: the one
    transaction is re-broadcast (not one per order), and once mined every order is placed
    exactly once."""
    from gridshare.chain.config import ChainConfig

    chain = connect(ChainConfig(chain=own_anvil.url, receipt_timeout_s=20.0))
    m = _Market(chain, tmp_path / "o.sqlite", GatewaySettings(stall_s=0.3))
    interval = m.current() + 2
    _rpc(chain, "evm_setIntervalMining", 0)
    _rpc(chain, "evm_setAutomine", False)
    digests = [m.submit(who, interval) for who in (0, 1, 2)]
    m.gw.relay_once()
    assert len({m.row(d).tx_hash for d in digests}) == 1
    _rpc(chain, "anvil_dropAllTransactions")
    time.sleep(0.4)
    m.gw.relay_once()
    assert m.gw.relayer.status.state == "stalled" and m.gw.relayer.status.rebroadcast == 1
    _rpc(chain, "evm_mine")
    _rounds(m.gw, 2)
    assert {m.row(d).status for d in digests} == {"relayed"}
    assert sorted(m.placed(interval)) == sorted(digests)
