"""The relay of accepted orders to ``GridMarket.submitOrdersSigned``: one sender key, one store.

Orders go out in batches (up to ``orders_per_tx`` per transaction): the contract places each
order it accepts and skips each one it refuses with ``OrderRejected`` (the error
``submitOrderSigned`` would revert with), so one bad order never blocks the others in its batch.
A batch that reverts as a whole (paused, out of gas) puts its orders back to ``pending`` to go
out one per transaction; a single order's revert fails it with the reason.

One :meth:`Relayer.round` (the background loop calls it back to back; ``flush`` until an
interval's orders are done):

1. **observe**: the relayer account's mined nonce count, then the market's new ``OrderPlaced``
   logs up to ``head - confirmations`` (``gridshare.chain.events.EventReader``, reorg-aware).
   An order whose digest is in such a log is ``relayed`` with its block: ``relayed`` means the
   event is in a block with the configured confirmations, never just "a receipt said 1". A reorg
   puts the orders of the dropped blocks back to ``sent`` (block unknown) and resyncs the
   sender's nonces; they are resolved again (step 2) and re-sent if the chain lost them.
2. **check what is in flight**: a transaction whose nonce is mined but with orders that have no
   confirmed ``OrderPlaced`` either rejected them (``failed`` with the decoded reason), reverted
   (see above) or lost its nonce to another transaction (its orders are ``pending`` again); one
   not mined
   within ``stall_s`` is *stalled*: it is first re-broadcast (the node may have lost its pool),
   then replaced with fees ``fee_bump`` times higher; a nonce gap below it (a transaction
   that never reached the node) is closed by re-signing the waiting ones from the mined count.
   ``sent`` orders without a transaction in memory (after a restart or a reorg) are looked up by
   their transaction hash first: nothing is sent twice on purpose.
3. **send**: ``pending`` orders, oldest first, at most ``relay_batch`` per round and
   ``max_in_flight`` unmined, after checks that keep one order from breaking others: an order
   whose deadline passed or whose interval is over is ``failed`` without a transaction; a
   prosumer's orders go out in nonce order, and an order whose predecessor failed (a nonce
   gap) is ``failed`` with the nonce to sign again with, instead of reverting on-chain. Other
   prosumers' orders are never held up by it.

The relay's state (``running``, ``stalled``, ``chain_down``, ``chain_reset``, ``stopped``), a
heartbeat and counters go to the store's ``meta`` (key ``relay``, at most once a second or on a
change), where ``/healthz`` of the API process reads them.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from eth_abi import encode as abi_encode
from eth_utils import keccak
from hexbytes import HexBytes
from web3.exceptions import TransactionNotFound

from gridshare.chain.client import bumped_fees
from gridshare.chain.errors import (
    ChainError,
    ChainUnavailable,
    ContractRevert,
    TransactionRejected,
)
from gridshare.chain.events import EventReader
from market.orders import Order

from .store import OrderStore, StoredOrder
from .watch import ChainWatch

log = logging.getLogger(__name__)

#: Blocks re-read behind the stored cursor when a relay starts (>= any sane confirmation count).
RESTART_MARGIN_BLOCKS = 64
#: Seconds between two publications of an unchanged relay state.
PUBLISH_EVERY_S = 1.0
ORDER_TUPLE = "(address,uint64,uint8,uint64,uint64,uint64,uint64)"
BATCH_TYPES = (f"{ORDER_TUPLE}[]", "bytes[]")
BATCH_SELECTOR = keccak(text=f"submitOrdersSigned({','.join(BATCH_TYPES)})")[:4]
#: ``GridMarket.MAX_ORDERS_PER_BATCH``: most orders one transaction takes.
MAX_ORDERS_PER_TX = 200


@dataclass
class RelayReport:
    """What one relay round did (counts of orders / transactions)."""

    sent: int = 0
    relayed: int = 0
    failed: int = 0
    requeued: int = 0
    rebroadcast: int = 0
    replaced: int = 0
    in_flight: int = 0

    @property
    def progressed(self) -> bool:
        return bool(self.sent or self.relayed or self.failed or self.requeued)


@dataclass
class _Flight:
    """A batch transaction on its way: its orders not resolved yet (digest -> row), as sent
    (nonce, fees), every hash it went out under."""

    rows: dict[bytes, StoredOrder]
    full: dict[str, Any]
    hashes: list[HexBytes]
    sent_monotonic: float
    attempts: int = 0
    mined_block: int | None = None

    @property
    def nonce(self) -> int:
        return int(self.full["nonce"])


@dataclass
class RelayState:
    """What the relay publishes in the store's ``meta`` (``relay``)."""

    state: str = "starting"
    detail: str = ""
    pid: int = field(default_factory=os.getpid)
    relayer: str = ""
    confirmations: int = 0
    heartbeat_unix_s: float = 0.0
    progress_unix_s: float = 0.0
    in_flight: int = 0
    sent: int = 0
    relayed: int = 0
    failed: int = 0
    rebroadcast: int = 0
    replaced: int = 0

    @classmethod
    def from_meta(cls, meta: dict[str, str]) -> RelayState | None:
        """The state a relay published (None: no relay ever ran on this store)."""
        raw = meta.get("relay")
        if raw is None:
            return None
        data = json.loads(raw)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def batch_calldata(orders: Sequence[tuple[Order, bytes]]) -> bytes:
    """Call data of ``GridMarket.submitOrdersSigned(orders, signatures)`` (eth_abi directly:
    web3's contract-function path costs milliseconds per call)."""
    return BATCH_SELECTOR + abi_encode(
        BATCH_TYPES, [[o.as_abi_tuple() for o, _ in orders], [bytes(s) for _, s in orders]])


def _placement(block: Any, tx_hash: Any) -> dict[str, Any]:
    """The fields of a ``relayed`` order: its block and transaction."""
    return {"block_number": int(block), "tx_hash": HexBytes(tx_hash).to_0x_hex()}


class Relayer:
    """Relays one store's orders with one key (see module docstring). Thread-safe."""

    def __init__(self, mc: Any, store: OrderStore, watch: ChainWatch, settings: Any,
                 clock: Any = time.time) -> None:
        self.mc = mc
        self.chain = mc.chain
        self.store = store
        self.watch = watch
        self.settings = settings
        self.clock = clock
        self.account = self.chain.account(settings.relayer)
        self.interval_s = int(mc.deployment.interval_s)
        self.reader = EventReader(self.chain, mc.market, self._start_block(),
                                  confirmations=settings.confirmations, keep_logs=False,
                                  window_blocks=settings.log_window_blocks, decode=False)
        self.status = RelayState(relayer=self.account.address,
                                 confirmations=settings.confirmations)
        self._flights: dict[bytes, _Flight] = {}
        self._next_nonce: dict[str, int] = {}
        self._failure: dict[str, str] = {}  # prosumer -> why its nonce sequence broke
        self._alone: set[bytes] = set()  # orders of a batch that reverted: one per transaction
        self._orphans_checked = False
        self._can_pause = any(item.get("name") == "paused" for item in mc.market.abi)
        self._published = (0.0, "")
        self._lock = threading.RLock()

    def _start_block(self) -> int:
        cursor = self.store.meta().get("relay_scanned_block")
        start = int(self.mc.deployment.deploy_block)
        if cursor is not None:
            margin = max(RESTART_MARGIN_BLOCKS, self.settings.confirmations)
            start = max(start, int(cursor) - margin)
        return start

    # ---- one round
    def round(self) -> RelayReport:
        """Observe, check what is in flight, send (see module docstring); ChainUnavailable when
        the node fails (the round's sends stay recorded as sent)."""
        report = RelayReport()
        with self._lock:
            if self.watch.reset_reason is not None:
                self._set_state("chain_reset", self.watch.reset_reason)
                self.publish(force=False)
                return report
            if self.status.state in ("starting", "chain_down", "chain_reset", "error"):
                self._set_state("running", "")  # until this round finds otherwise
            try:
                mined = int(self.chain.w3.eth.get_transaction_count(self.account.address,
                                                                    "latest"))
                self._observe(report)
                if not self._orphans_checked:
                    self._adopt_orphans(report)
                self._check_flights(mined, report)
                self._send(report)
            except ContractRevert:
                raise
            except TransactionRejected as exc:  # funds, fees: the relay's problem, no order's
                self.chain.nonces.resync(self.account.address)
                self._set_state("error", f"the node refused a relay transaction: {exc}")
                log.error("relay: %s", self.status.detail)
                self.publish(force=False)
                return report
            except (ChainError, OSError) as exc:
                self.chain.nonces.resync(self.account.address)
                self.watch.set_down(exc)
                self._set_state("chain_down", str(exc))
                self.publish(force=False)
                if isinstance(exc, ChainUnavailable):
                    raise
                raise self.watch.unavailable(exc) from exc
            report.in_flight = len(self._flights)
            self._count(report)
            self.publish(force=report.progressed)
        return report

    # ---- 1. observe
    def _observe(self, report: RelayReport) -> None:
        result = self.reader.read("OrderPlaced")
        if result.reorg is not None:
            self._after_reorg(result.reorg.ancestor_block, report)
        if result.retry or not result.logs:
            return
        updates = []
        for entry in result.logs:
            digest = bytes(HexBytes(entry["data"])[:32])  # OrderPlaced: digest, the 1st word
            flight = self._flights.pop(digest, None)
            if flight is not None:
                row: StoredOrder | None = flight.rows.pop(digest)
            else:  # placed by an earlier run of the relay, or by another sender
                row = self.store.by_digest(digest)
                if row is None or row.status in ("relayed", "failed"):
                    continue  # not an order of this store, or already final
            updates.append((row.seq, "relayed", _placement(entry["blockNumber"],
                                                           entry["transactionHash"])))
        self.store.mark_many(updates)
        report.relayed += len(updates)

    def _after_reorg(self, ancestor: int, report: RelayReport) -> None:
        """Orders recorded in blocks above ``ancestor`` go back to ``sent`` and are resolved
        again; the sender's nonces are re-read."""
        rows = self.store.mined_after(ancestor)
        self.store.back_to_sent([r.seq for r in rows])
        self.chain.nonces.resync(self.account.address)
        self._next_nonce.clear()
        for flight in self._flights.values():
            flight.mined_block = None
        self._orphans_checked = False
        report.requeued += len(rows)
        log.warning("reorg below block %d: %d orders back to sent", ancestor + 1, len(rows))

    def _adopt_orphans(self, report: RelayReport) -> None:
        """``sent`` orders without a transaction in memory (a restart, a reorg): adopt their
        transaction if the node still has it, else resolve them from its receipt, else send the
        orders again (pending)."""
        by_tx: dict[str, list[StoredOrder]] = {}
        for row in self.store.with_status("sent", 10**9):
            if row.digest not in self._flights:
                by_tx.setdefault(row.tx_hash or "", []).append(row)
        for tx_hash, rows in by_tx.items():
            tx = self._transaction(tx_hash)
            if tx is None:
                self.store.mark_many([(r.seq, "pending", {"error": None}) for r in rows])
                report.requeued += len(rows)
                continue
            if tx.get("blockNumber") is None:
                full = {"to": tx["to"], "data": HexBytes(tx["input"]), "gas": int(tx["gas"]),
                        "value": int(tx["value"]), "nonce": int(tx["nonce"]),
                        "chainId": self.chain.chain_id, "from": self.account.address,
                        **{k: int(tx[k]) for k in ("gasPrice", "maxFeePerGas",
                                                   "maxPriorityFeePerGas") if tx.get(k)}}
                if "maxFeePerGas" in full:
                    full.pop("gasPrice", None)
                flight = _Flight({r.digest: r for r in rows}, full, [HexBytes(tx_hash)],
                                 time.monotonic())
            else:
                flight = _Flight({r.digest: r for r in rows}, {"nonce": int(tx["nonce"])},
                                 [HexBytes(tx_hash)], time.monotonic(),
                                 mined_block=int(tx["blockNumber"]))
            self._flights.update(dict.fromkeys(flight.rows, flight))
        self._orphans_checked = True

    def _in_flight(self) -> list[_Flight]:
        """The transactions in flight (each once; ``_flights`` maps every order to its own)."""
        return list({id(f): f for f in self._flights.values()}.values())

    def _land(self, flight: _Flight, digest: bytes) -> StoredOrder:
        """``digest``'s order is resolved: no longer in flight."""
        del self._flights[digest]
        return flight.rows.pop(digest)

    def _transaction(self, tx_hash: str | None) -> Any:
        if not tx_hash:
            return None
        try:
            return self.chain.w3.eth.get_transaction(HexBytes(tx_hash))
        except TransactionNotFound:
            return None

    # ---- 2. in flight
    def _check_flights(self, mined: int, report: RelayReport) -> None:
        confirmed_to, _ = self.reader.position("OrderPlaced")
        for flight in [f for f in self._in_flight() if f.nonce < mined]:
            self._resolve_mined(flight, confirmed_to, report)
        waiting = sorted((f for f in self._in_flight() if f.nonce >= mined),
                         key=lambda f: f.nonce)
        stalled = waiting and time.monotonic() - waiting[0].sent_monotonic > \
            self.settings.stall_s
        if stalled:
            self._unstick(waiting, mined, report)
        elif self.status.state == "stalled":
            self._set_state("running", "")

    def _resolve_mined(self, flight: _Flight, confirmed_to: int, report: RelayReport) -> None:
        """A transaction whose nonce is mined with orders that have no confirmed OrderPlaced."""
        if flight.mined_block is not None and flight.mined_block > confirmed_to:
            return  # mined, confirmations pending: the reader will see it
        receipt = self._receipt(flight)
        if receipt is None:  # the nonce went to another transaction: send the orders again
            self._requeue(flight, report)
            return
        block = int(receipt["blockNumber"])
        if block > confirmed_to:
            if flight.mined_block != block:  # shown as sent in its block until confirmed
                self.store.mark_many([(r.seq, "sent", {"block_number": block})
                                      for r in flight.rows.values()])
            flight.mined_block = block
        elif receipt["status"] == 1:
            self._resolve_receipt(flight, receipt, report)
        elif len(flight.rows) > 1:  # the whole batch reverted: each order alone next time
            reason = self._revert_reason(receipt, flight)
            rows = self._requeue(flight, report)
            self._alone.update(r.digest for r in rows)
            log.warning("relay: a batch of %d orders reverted (%s); they go out one by one",
                        len(rows), reason)
        else:
            reason = self._revert_reason(receipt, flight)
            self._fail(flight, next(iter(flight.rows)), reason, receipt, report)

    def _requeue(self, flight: _Flight, report: RelayReport) -> list[StoredOrder]:
        """The orders still in ``flight`` go back to ``pending`` (their prosumers' nonces are
        read again); returns them."""
        rows = [self._land(flight, d) for d in list(flight.rows)]
        for row in rows:
            self._next_nonce.pop(row.order.prosumer, None)
        self.store.mark_many([(r.seq, "pending", {"error": None}) for r in rows])
        report.requeued += len(rows)
        return rows

    def _resolve_receipt(self, flight: _Flight, receipt: Any, report: RelayReport) -> None:
        """A confirmed, successful transaction: each order still in flight was placed (below
        where the reader started: a restart) or rejected with its reason."""
        placed = {bytes(e["args"]["digest"]) for e in
                  self.chain.events(receipt, self.mc.market, "OrderPlaced")}
        rejected = {bytes(e["args"]["digest"]): bytes(e["args"]["reason"]) for e in
                    self.chain.events(receipt, self.mc.market, "OrderRejected")}
        tx_hash = HexBytes(receipt["transactionHash"])
        for digest in list(flight.rows):
            if digest in placed:
                row = self._land(flight, digest)
                self.store.mark(row.seq, "relayed",
                                **_placement(receipt["blockNumber"], tx_hash))
                report.relayed += 1
            elif digest in rejected:
                refusal = self.chain.decoder.decode(rejected[digest], tx_hash.to_0x_hex())
                self._fail(flight, digest, f"contract refused: {refusal}", receipt, report)
            else:
                self._fail(flight, digest, f"transaction {tx_hash.to_0x_hex()} was mined "
                           f"without an OrderPlaced event of {self.mc.market.address}",
                           receipt, report)

    def _receipt(self, flight: _Flight) -> Any:
        for tx_hash in reversed(flight.hashes):
            try:
                return self.chain.w3.eth.get_transaction_receipt(tx_hash)
            except TransactionNotFound:
                continue
        return None

    def _fail(self, flight: _Flight, digest: bytes, reason: str, receipt: Any,
              report: RelayReport) -> None:
        row = self._land(flight, digest)
        reason = self._note_failure(row, reason)
        self.store.mark(row.seq, "failed", error=reason,
                        tx_hash=HexBytes(receipt["transactionHash"]).to_0x_hex())
        report.failed += 1

    def _note_failure(self, row: StoredOrder, reason: str) -> str:
        """Remember why ``row``'s prosumer's nonce sequence broke (its later orders name it);
        the reason to record for ``row``."""
        prosumer = row.order.prosumer
        earlier = self._failure.get(prosumer)
        if earlier is None:
            self._failure[prosumer] = (f"order 0x{row.digest.hex()} (nonce {row.order.nonce}) "
                                       f"failed: {reason}")
        elif earlier not in reason:  # sent before the earlier one failed: name that one
            reason = f"{reason}; after {earlier}"
        self._next_nonce.pop(prosumer, None)
        log.warning("order 0x%s of %s failed: %s", row.digest.hex(), prosumer, reason)
        return reason

    def _revert_reason(self, receipt: Any, flight: _Flight) -> str:
        try:
            self.chain.wait(HexBytes(receipt["transactionHash"]),
                            flight.full if "to" in flight.full else None)
        except ContractRevert as exc:
            return f"contract refused: {exc}"
        return "relay transaction failed"

    def _unstick(self, waiting: list[_Flight], mined: int, report: RelayReport) -> None:
        """Re-broadcast, re-number (gap below) or replace (higher fees) stalled transactions."""
        first = waiting[0]
        oldest, waited = first.nonce, time.monotonic() - first.sent_monotonic
        fresh = self.chain._fees()
        queued = int(self.chain.w3.eth.get_transaction_count(self.account.address, "pending"))
        if first.nonce > mined and queued <= mined:  # nothing of ours can be mined next
            what = f"nonce gap: {mined} is mined next, the oldest waiting has {first.nonce}"
            for offset, flight in enumerate(waiting):
                flight.full["nonce"] = mined + offset
                self._resend(flight, bumped_fees(flight.full, fresh, self.settings.fee_bump))
                report.replaced += 1
            self.chain.nonces.resync(self.account.address)
        elif first.attempts == 0:
            what = "re-broadcast"
            for flight in waiting:
                self._resend(flight, None)
                report.rebroadcast += 1
        else:
            what = f"replaced with {self.settings.fee_bump}x fees"
            for flight in waiting:
                self._resend(flight, bumped_fees(flight.full, fresh, self.settings.fee_bump))
                report.replaced += 1
        self._set_state("stalled", f"{len(waiting)} transactions not mined for "
                                   f"{waited:.1f} s (nonce {oldest}): {what}")
        log.warning("relay stalled: %s", self.status.detail)

    def _resend(self, flight: _Flight, fees: dict[str, int] | None) -> None:
        if fees is not None:
            flight.full.update(fees)
        tx_hash = self.chain.resend(flight.full, self.account)
        if tx_hash is not None and tx_hash not in flight.hashes:
            flight.hashes.append(tx_hash)
            self.store.mark_many([(r.seq, "sent", {"tx_hash": tx_hash.to_0x_hex()})
                                  for r in flight.rows.values()])
        flight.attempts += 1
        flight.sent_monotonic = time.monotonic()

    # ---- 3. send
    def _send(self, report: RelayReport) -> None:
        room = min(self.settings.relay_batch, self.settings.max_in_flight - len(self._flights))
        if room <= 0:
            return
        rows = [r for r in self.store.with_status("pending", room)
                if r.digest not in self._flights]
        if not rows or self._paused():
            return
        self.watch.probe()  # the chain's time now: expired orders are not sent
        now = self.watch.now_unix_s()
        fees = self.chain._fees()  # one fee quote per round (Chain's own rule)
        updates: list[tuple[int, str, dict[str, Any]]] = []
        batch: list[StoredOrder] = []
        batches: list[list[StoredOrder]] = []
        for row in rows:
            refusal = self._refusal(row, now)
            if refusal is not None:
                updates.append((row.seq, "failed", {"error": self._note_failure(row, refusal)}))
                report.failed += 1
                continue
            self._next_nonce[row.order.prosumer] = row.order.nonce + 1
            self._failure.pop(row.order.prosumer, None)
            if row.digest in self._alone:  # after the batch before it: nonce order
                batches += [batch, [row]] if batch else [[row]]
                batch = []
                continue
            batch.append(row)
            if len(batch) == self.settings.orders_per_tx:
                batches.append(batch)
                batch = []
        batches += [batch] if batch else []
        signed = [self._sign(b, fees) for b in batches]
        updates += [(r.seq, "sent", {"tx_hash": tx_hash.to_0x_hex()})
                    for b, (_, tx_hash) in zip(batches, signed, strict=True) for r in b]
        # recorded before they go out: after a crash in between, the next relay finds out by
        # the hash whether a transaction reached the node
        self.store.mark_many(updates)
        report.sent += sum(len(b) for b in batches)
        self._broadcast(signed)

    def _sign(self, rows: list[StoredOrder], fees: dict[str, int]) -> tuple[bytes, HexBytes]:
        """Sign a transaction placing ``rows`` with the relayer's next nonce; it is in flight
        from now."""
        tx = {"to": self.mc.market.address,
              "data": batch_calldata([(r.order, r.signature) for r in rows]),
              "gas": self.settings.relay_gas * len(rows), **fees}
        full, raw, tx_hash = self.chain.sign_next(tx, self.account)
        flight = _Flight({r.digest: r for r in rows}, full, [tx_hash], time.monotonic())
        self._flights.update(dict.fromkeys(flight.rows, flight))
        self._alone.difference_update(flight.rows)
        return raw, tx_hash

    def _broadcast(self, signed: list[tuple[bytes, HexBytes]]) -> None:
        """Send the round's transactions; a node that is down raises (they are re-broadcast
        once it is back, as stalled), one that refuses them is reported in the relay's state."""
        errors = [e for e in self.chain.broadcast(signed, self.settings.send_workers) if e]
        down = next((e for e in errors if isinstance(e, ChainUnavailable)), None)
        if down is not None:
            raise down
        if errors:
            self.chain.nonces.resync(self.account.address)
            self._set_state("error", f"the node refused {len(errors)} of {len(signed)} relay "
                                     f"transactions: {errors[0]}")
            log.error("relay: %s", self.status.detail)

    def _refusal(self, row: StoredOrder, now_unix_s: int) -> str | None:
        """Why ``row`` must not be sent (it would revert), or None."""
        order = row.order
        if order.deadline_unix_s < now_unix_s:
            return (f"expired before it could be relayed: deadline {order.deadline_unix_s}, "
                    f"chain time {now_unix_s}")
        current = now_unix_s // self.interval_s
        if order.interval < current:
            return f"interval {order.interval} was over before it could be relayed " \
                   f"(current interval {current})"
        expected = self._expected_nonce(order.prosumer)
        if order.nonce > expected:
            why = self._failure.get(order.prosumer, "an earlier order was not placed")
            return (f"nonce gap: the market expects nonce {expected} of {order.prosumer} "
                    f"({why}); sign this order again with nonce {expected}")
        if order.nonce < expected:
            return f"nonce {order.nonce} of {order.prosumer} was already used on-chain"
        return None

    def _paused(self) -> bool:
        """True (state ``paused``) while the market contract is paused: orders wait."""
        if not self._can_pause:
            return False
        if bool(self.chain.call(self.mc.market.functions.paused())):
            self._set_state("paused", f"the market contract {self.mc.market.address} is "
                                      "paused: orders wait")
            return True
        if self.status.state == "paused":
            self._set_state("running", "")
        return False

    def _expected_nonce(self, prosumer: str) -> int:
        if prosumer not in self._next_nonce:
            self._next_nonce[prosumer] = int(self.chain.call(
                self.mc.market.functions.nonceOf(prosumer)))
        return self._next_nonce[prosumer]

    # ---- state
    def _set_state(self, state: str, detail: str) -> None:
        self.status.state, self.status.detail = state, detail

    def _count(self, report: RelayReport) -> None:
        st = self.status
        st.in_flight = report.in_flight
        st.sent += report.sent
        st.relayed += report.relayed
        st.failed += report.failed
        st.rebroadcast += report.rebroadcast
        st.replaced += report.replaced
        if report.progressed:
            st.progress_unix_s = self.clock()

    def publish(self, force: bool = True) -> None:
        """Write the relay's state to the store (when ``force``, else at most once a second
        unless the state changed)."""
        now = self.clock()
        last_at, last_state = self._published
        if not force and self.status.state == last_state and now - last_at < PUBLISH_EVERY_S:
            return
        self.status.heartbeat_unix_s = now
        scanned, _ = self.reader.position("OrderPlaced")
        self.store.set_meta({"relay": json.dumps(asdict(self.status)),
                             "relay_scanned_block": str(max(scanned, 0))})
        self._published = (now, self.status.state)

    def waiting_for_chain(self) -> None:
        """Publish that the relay waits: the node is down or not the deployment's chain."""
        with self._lock:
            if self.watch.reset_reason is not None:
                self._set_state("chain_reset", self.watch.reset_reason)
            else:
                self._set_state("chain_down", self.watch.last_error or "node unreachable")
            self.publish(force=False)

    def stopped(self) -> None:
        """Publish that the relay stopped."""
        with self._lock:
            self._set_state("stopped", "")
            self.publish()
