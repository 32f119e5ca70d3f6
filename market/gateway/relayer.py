"""The relay of accepted orders to ``GridMarket.submitOrderSigned``: one sender key, one store.

One :meth:`Relayer.round` (the background loop calls it back to back; ``flush`` until an
interval's orders are done):

1. **observe**: the relayer account's mined nonce count, then the market's new ``OrderPlaced``
   logs up to ``head - confirmations`` (``gridshare.chain.events.EventReader``, reorg-aware).
   An order whose digest is in such a log is ``relayed`` with its block: ``relayed`` means the
   event is in a block with the configured confirmations, never just "a receipt said 1". A reorg
   puts the orders of the dropped blocks back to ``sent`` (block unknown) and resyncs the
   sender's nonces; they are resolved again (step 2) and re-sent if the chain lost them.
2. **check what is in flight**: a transaction whose nonce is mined but whose order has no
   confirmed ``OrderPlaced`` either reverted (the order is ``failed`` with the decoded reason)
   or lost its nonce to another transaction (the order is ``pending`` again); one not mined
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
from dataclasses import asdict, dataclass, field
from typing import Any

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
SUBMIT_SELECTOR = keccak(text=f"submitOrderSigned({ORDER_TUPLE},bytes)")[:4]


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
    """An order's transaction on its way: as sent (nonce, fees), every hash it went out under."""

    row: StoredOrder
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


def submit_calldata(order: Order, signature: bytes) -> bytes:
    """Call data of ``GridMarket.submitOrderSigned(order, signature)``, ABI-encoded by hand:
    seven static words of the order, the offset of the signature (8 words), its length and its
    bytes padded to whole words (web3's contract-function path costs milliseconds per call)."""
    words = [int(order.prosumer, 16), order.interval, int(order.side), order.energy_wh,
             order.price_micro_eur_per_kwh, order.nonce, order.deadline_unix_s, 8 * 32,
             len(signature)]
    padded = bytes(signature).ljust(-(-len(signature) // 32) * 32, b"\0")
    return SUBMIT_SELECTOR + b"".join(w.to_bytes(32, "big") for w in words) + padded


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
                row: StoredOrder | None = flight.row
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
        """``sent`` orders without a transaction in memory (a restart, a reorg): adopt the
        transaction if the node still has it, else resolve it from its receipt, else send the
        order again (pending)."""
        known = {f.row.seq for f in self._flights.values()}
        for row in self.store.with_status("sent", 10**9):
            if row.seq in known:
                continue
            tx = self._transaction(row.tx_hash)
            if tx is not None and tx.get("blockNumber") is None:
                full = {"to": tx["to"], "data": HexBytes(tx["input"]), "gas": int(tx["gas"]),
                        "value": int(tx["value"]), "nonce": int(tx["nonce"]),
                        "chainId": self.chain.chain_id, "from": self.account.address,
                        **{k: int(tx[k]) for k in ("gasPrice", "maxFeePerGas",
                                                   "maxPriorityFeePerGas") if tx.get(k)}}
                if "maxFeePerGas" in full:
                    full.pop("gasPrice", None)
                self._flights[row.digest] = _Flight(row, full, [HexBytes(row.tx_hash or "")],
                                                    time.monotonic())
            elif tx is None:
                self.store.mark(row.seq, "pending", error=None)
                report.requeued += 1
            else:
                self._flights[row.digest] = _Flight(
                    row, {"nonce": int(tx["nonce"])}, [HexBytes(row.tx_hash or "")],
                    time.monotonic(), mined_block=int(tx["blockNumber"]))
        self._orphans_checked = True

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
        for flight in [f for f in self._flights.values() if f.nonce < mined]:
            self._resolve_mined(flight, confirmed_to, report)
        waiting = sorted((f for f in self._flights.values() if f.nonce >= mined),
                         key=lambda f: f.nonce)
        stalled = waiting and time.monotonic() - waiting[0].sent_monotonic > \
            self.settings.stall_s
        if stalled:
            self._unstick(waiting, mined, report)
        elif self.status.state == "stalled":
            self._set_state("running", "")

    def _resolve_mined(self, flight: _Flight, confirmed_to: int, report: RelayReport) -> None:
        """A flight whose nonce is mined but whose order has no confirmed OrderPlaced."""
        if flight.mined_block is not None and flight.mined_block > confirmed_to:
            return  # mined, confirmations pending: the reader will see it
        receipt = self._receipt(flight)
        row = flight.row
        if receipt is None:  # the nonce went to another transaction: send the order again
            del self._flights[row.digest]
            self._next_nonce.pop(row.order.prosumer, None)
            self.store.mark(row.seq, "pending", error=None)
            report.requeued += 1
            return
        block = int(receipt["blockNumber"])
        if block > confirmed_to:
            if flight.mined_block != block:  # shown as sent in its block until confirmed
                self.store.mark(row.seq, "sent", block_number=block)
            flight.mined_block = block
        elif receipt["status"] == 1 and self._placed_in(receipt, row.digest):
            # confirmed, below where the reader started (a restart): relayed by its receipt
            del self._flights[row.digest]
            self.store.mark(row.seq, "relayed", **_placement(block, receipt["transactionHash"]))
            report.relayed += 1
        else:
            self._fail_flight(flight, receipt, report)

    def _receipt(self, flight: _Flight) -> Any:
        for tx_hash in reversed(flight.hashes):
            try:
                return self.chain.w3.eth.get_transaction_receipt(tx_hash)
            except TransactionNotFound:
                continue
        return None

    def _placed_in(self, receipt: Any, digest: bytes) -> bool:
        return any(bytes(e["args"]["digest"]) == digest
                   for e in self.chain.events(receipt, self.mc.market, "OrderPlaced"))

    def _fail_flight(self, flight: _Flight, receipt: Any, report: RelayReport) -> None:
        row = flight.row
        if receipt["status"] == 1:
            reason = (f"transaction {HexBytes(receipt['transactionHash']).to_0x_hex()} was "
                      f"mined without an OrderPlaced event of {self.mc.market.address}")
        else:
            reason = self._revert_reason(receipt, flight)
        reason = self._note_failure(row, reason)
        del self._flights[row.digest]
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
            self.store.mark(flight.row.seq, "sent", tx_hash=tx_hash.to_0x_hex())
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
        signed: list[tuple[bytes, HexBytes]] = []
        for row in rows:
            refusal = self._refusal(row, now)
            if refusal is None:
                signed.append(self._sign(row, fees))
                updates.append((row.seq, "sent", {"tx_hash": signed[-1][1].to_0x_hex()}))
            else:
                updates.append((row.seq, "failed", {"error": self._note_failure(row, refusal)}))
                report.failed += 1
        # recorded before they go out: after a crash in between, the next relay finds out by
        # the hash whether a transaction reached the node
        self.store.mark_many(updates)
        report.sent += len(signed)
        self._broadcast(signed)

    def _sign(self, row: StoredOrder, fees: dict[str, int]) -> tuple[bytes, HexBytes]:
        """Sign ``row``'s transaction with the relayer's next nonce; it is in flight from now."""
        order = row.order
        tx = {"to": self.mc.market.address, "data": submit_calldata(order, row.signature),
              "gas": self.settings.relay_gas, **fees}
        full, raw, tx_hash = self.chain.sign_next(tx, self.account)
        self._flights[row.digest] = _Flight(row, full, [tx_hash], time.monotonic())
        self._next_nonce[order.prosumer] = order.nonce + 1
        self._failure.pop(order.prosumer, None)
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
