"""The order gateway: validate a signed order, store it durably, relay it to the market contract.

This is the one code path by which orders enter the market, used by ``POST /v1/orders`` and by
in-process callers (the day simulation):

1. :meth:`OrderGateway.submit` checks the order with :func:`market.orders.validate_order`
   (signature, registered prosumer, nonce, deadline, energy, price bounds, open interval)
   against a mirror of the market contract's state (registered prosumers, nonces, price bounds,
   open intervals; read from the chain, cached for ``cache_ttl_s`` / ``interval_ttl_s`` and
   refreshed ahead of expiry by the background thread), then commits it to the
   SQLite :class:`~market.gateway.store.OrderStore`. Only then is it *accepted* (HTTP 201).
   The expected nonce is one more than the prosumer's last stored order, or the contract's
   ``nonceOf`` when that is higher, so a client can send its next order before the previous
   one is on-chain.
2. :meth:`OrderGateway.relay_once` (called by a background thread, or directly) sends the
   stored orders in acceptance order to ``GridMarket.submitOrderSigned``: all of a batch are
   sent first, then their receipts are awaited, so a batch costs about one block. Relayed
   orders emit ``OrderPlaced``, which is what the commitment and the clearing read
   (``market.chain.MarketChain``); an order the contract refuses (e.g. its deadline passed
   while the node was down) is marked ``failed`` with the decoded reason.
3. :meth:`OrderGateway.settle_interval` closes the interval here (no more orders), relays
   every order of it that is still waiting, then runs ``MarketChain.settle_interval`` (commit the
   Merkle root, clear, settle).

Node down: while the last probe (every ``probe_interval_s``) or a read failed, ``submit`` raises
:class:`~gridshare.chain.errors.ChainUnavailable` and nothing is stored (HTTP 503). An order
acknowledged just before the node went away stays in SQLite as ``pending``/``sent`` and is
relayed when the node answers again. While the node is down the relay loop waits
``probe_interval_s`` between probes (:class:`~gridshare.chain.backoff.Backoff`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from hexbytes import HexBytes
from web3.exceptions import TransactionNotFound

from gridshare.chain.backoff import Backoff
from gridshare.chain.errors import ChainError, ChainUnavailable, ContractRevert
from market.chain import MarketChain
from market.orders import (
    Order,
    OrderError,
    ValidationContext,
    recover_signer,
    validate_order,
)

from .store import DuplicateOrderError, OrderStore, StoredOrder

log = logging.getLogger(__name__)


class ReplayedOrderError(OrderError):
    """The same order (digest) or the prosumer's nonce is already stored."""

    code = "bad_nonce"


@dataclass(frozen=True)
class GatewaySettings:
    """Tuning of the gateway. Times in seconds; gas in gas units."""

    relayer: str = "settler"
    cache_ttl_s: float = 20.0
    interval_ttl_s: float = 2.0
    refresh_per_tick: int = 6
    probe_interval_s: float = 0.5
    relay_batch: int = 200
    relay_gas: int = 200_000
    receipt_timeout_s: float = 15.0
    idle_sleep_s: float = 0.05
    max_energy_wh: int = 10_000_000

    def __post_init__(self) -> None:
        if min(self.cache_ttl_s, self.interval_ttl_s) < 0 or self.probe_interval_s <= 0 \
                or self.idle_sleep_s <= 0:
            raise ValueError("cache_ttl_s, interval_ttl_s must be >= 0, probe_interval_s and "
                             "idle_sleep_s > 0")
        if self.relay_batch < 1 or self.relay_gas < 21_000 or self.receipt_timeout_s <= 0:
            raise ValueError("relay_batch >= 1, relay_gas >= 21000, receipt_timeout_s > 0")


@dataclass(frozen=True)
class Accepted:
    """An accepted order: its EIP-712 digest and place in the relay queue."""

    digest: bytes
    seq: int
    order: Order


@dataclass
class RelayReport:
    """What one relay round did."""

    sent: int = 0
    relayed: int = 0
    failed: int = 0
    waiting: int = 0


class _Cache:
    """Values with a time to live (seconds, monotonic clock), refreshed ahead of expiry.

    ``get`` loads a missing or expired value (blocking); :meth:`refresh` (called from the
    background thread) reloads values older than half their TTL, so keys in use never expire
    on the request path; keys unused for ``idle_drop_s`` are dropped.
    """

    def __init__(self, ttl_s: float, idle_drop_s: float = 600.0) -> None:
        self.ttl_s = ttl_s
        self.idle_drop_s = idle_drop_s
        # key -> (loaded at, value, loader, last used)
        self._data: dict[Any, tuple[float, Any, Callable[[], Any], float]] = {}
        self._lock = threading.Lock()

    def get(self, key: Any, load: Callable[[], Any]) -> Any:
        now = time.monotonic()
        with self._lock:
            hit = self._data.get(key)
            if hit is not None and now - hit[0] <= self.ttl_s:
                self._data[key] = (hit[0], hit[1], hit[2], now)
                return hit[1]
        value = load()
        with self._lock:
            self._data[key] = (now, value, load, now)
        return value

    def fresh(self, key: Any) -> bool:
        with self._lock:
            hit = self._data.get(key)
        return hit is not None and time.monotonic() - hit[0] <= self.ttl_s

    def refresh(self, limit: int) -> int:
        """Reload up to ``limit`` entries older than ttl/2, oldest first (a small budget per
        call spreads the reads out); returns the budget left. Chain errors propagate."""
        now = time.monotonic()
        with self._lock:
            items = sorted(self._data.items(), key=lambda kv: kv[1][0])
        for key, (loaded, _value, load, used) in items:
            if now - used > self.idle_drop_s:
                self.forget(key)
            elif now - loaded >= self.ttl_s / 2 and limit > 0:
                limit -= 1
                value = load()
                with self._lock:
                    self._data[key] = (time.monotonic(), value, load, used)
        return limit

    def forget(self, key: Any) -> None:
        with self._lock:
            self._data.pop(key, None)


class _Registered(AbstractSet[str]):
    """``prosumer in registered`` asks the gateway (lazy, so a bad signature costs no read)."""

    def __init__(self, gateway: OrderGateway) -> None:
        self._gw = gateway

    def __contains__(self, prosumer: object) -> bool:
        return isinstance(prosumer, str) and self._gw.is_registered(prosumer)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


class _Nonces(Mapping[str, int]):
    """``next_nonce[prosumer]`` asks the gateway (lazy)."""

    def __init__(self, gateway: OrderGateway) -> None:
        self._gw = gateway

    def __getitem__(self, prosumer: str) -> int:
        return self._gw.expected_nonce(prosumer)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


class OrderGateway:
    """Accepts signed orders for one market deployment (see module docstring)."""

    def __init__(self, mc: MarketChain, store: OrderStore,
                 settings: GatewaySettings | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.mc = mc
        self.chain = mc.chain
        self.store = store
        self.settings = settings or GatewaySettings()
        self.clock = clock
        self.domain = mc.domain
        ttl = self.settings.cache_ttl_s
        self._registered = _Cache(ttl)
        self._onchain_nonce = _Cache(ttl)
        self._open = _Cache(self.settings.interval_ttl_s)
        self._bounds = _Cache(self.settings.interval_ttl_s)
        self._caches = (self._open, self._bounds, self._registered, self._onchain_nonce)
        self._inflight: dict[str, int] = {}
        self._closed: set[int] = set(store.closed_intervals())
        self._local_next: dict[str, int] = {}
        self._submit_lock = threading.RLock()
        self._relay_lock = threading.RLock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.chain_ok = True
        self.last_block: int | None = None
        self.last_probe_monotonic = 0.0
        self.last_error: str | None = None
        self._down_cause: BaseException | None = None
        self._down_wait = Backoff(self.settings.probe_interval_s, factor=1.0)

    # ---- chain mirror
    def _read(self, fn: Callable[[], Any]) -> Any:
        """A chain read; a failure other than a revert marks the chain down and raises
        ChainUnavailable."""
        try:
            return fn()
        except ContractRevert:
            raise
        except (ChainError, OSError) as exc:  # OSError: a socket error past the retries
            self._set_down(exc)
            if isinstance(exc, ChainUnavailable):
                raise
            raise self._unavailable(exc) from exc

    def _set_down(self, exc: BaseException) -> None:
        if self.chain_ok:
            log.warning("chain node unreachable, orders are refused with 503: %s", exc)
        self.chain_ok = False
        self.last_error = f"{type(exc).__name__}: {exc}"
        self._down_cause = exc
        self.last_probe_monotonic = time.monotonic()

    def _unavailable(self, exc: BaseException) -> ChainUnavailable:
        """The node counts as down after ``exc`` (one failed request)."""
        return ChainUnavailable(self.chain.config.chain, 1, exc)

    def is_registered(self, prosumer: str) -> bool:
        f = self.mc.market.functions
        return bool(self._registered.get(
            prosumer, lambda: self._read(lambda: self.chain.call(f.isProsumer(prosumer)))))

    def expected_nonce(self, prosumer: str) -> int:
        """Next nonce of ``prosumer``: after its stored orders, or the contract's if higher."""
        f = self.mc.market.functions

        def load() -> int:
            onchain = int(self._read(lambda: self.chain.call(f.nonceOf(prosumer))))
            # re-read the store too (a relayer in another process may have failed orders),
            # unless orders of this prosumer are still on their way into it
            with self._submit_lock:
                if not self._inflight.get(prosumer):
                    self._local_next.pop(prosumer, None)
            return onchain

        onchain = int(self._onchain_nonce.get(prosumer, load))
        if prosumer not in self._local_next:
            stored = self.store.next_nonce(prosumer)
            if stored is not None:
                self._local_next[prosumer] = stored
        return max(onchain, self._local_next.get(prosumer, 0))

    def interval_open(self, interval: int) -> bool:
        """Open here (not closed by this gateway) and on-chain (neither committed nor settled)."""
        if interval in self._closed:
            return False
        f = self.mc.market.functions
        is_open = bool(self._open.get(
            interval, lambda: self._read(lambda: self.chain.call(f.isOpen(int(interval))))))
        if not is_open:
            self._closed.add(interval)
        return is_open

    def price_bounds(self) -> tuple[int, int]:
        """(min, max) limit price of the market in micro-euro per kWh."""
        f = self.mc.market.functions

        def load() -> tuple[int, int]:
            return (int(self._read(lambda: self.chain.call(f.minPriceMicroEurPerKwh()))),
                    int(self._read(lambda: self.chain.call(f.maxPriceMicroEurPerKwh()))))

        return self._bounds.get("bounds", load)

    # ---- accepting
    def _check_up(self) -> None:
        if not self.chain_ok and time.monotonic() - self.last_probe_monotonic < \
                self.settings.probe_interval_s:
            raise ChainUnavailable(self.chain.config.chain, ChainUnavailable.KNOWN_DOWN,
                                   self._down_cause)

    def _accept(self, order: Order, signature: bytes,
                on_done: Callable[[], None] | None = None) -> tuple[bytes, Any]:
        """Validate and queue ``order`` for the group commit; (digest, pending insert)."""
        with self._submit_lock:
            lo, hi = self.price_bounds()
            ctx = ValidationContext(
                domain=self.domain,
                now_unix_s=int(self.clock()),
                registered=_Registered(self),
                next_nonce=_Nonces(self),
                interval_open=self.interval_open,
                min_price_micro_eur_per_kwh=lo,
                max_price_micro_eur_per_kwh=hi,
                max_energy_wh=self.settings.max_energy_wh,
            )
            digest = validate_order(order, signature, ctx)
            # queued under the lock (a prosumer's nonces enter the store in order), committed
            # outside it together with the orders of other requests (one fsync per batch)
            pending = self.store.enqueue(order, digest, signature, self.clock(), on_done)
            self._local_next[order.prosumer] = order.nonce + 1
            self._inflight[order.prosumer] = self._inflight.get(order.prosumer, 0) + 1
        return digest, pending

    def _committed(self, order: Order, digest: bytes, pending: Any) -> Accepted:
        try:
            try:
                seq = self.store.wait(pending)
            finally:
                with self._submit_lock:
                    left = self._inflight.get(order.prosumer, 1) - 1
                    if left > 0:
                        self._inflight[order.prosumer] = left
                    else:
                        self._inflight.pop(order.prosumer, None)
        except DuplicateOrderError as exc:
            self._forget_prosumer(order.prosumer)
            raise ReplayedOrderError(str(exc)) from None
        except Exception:
            self._forget_prosumer(order.prosumer)
            raise
        self._wake.set()
        return Accepted(digest, seq, order)

    def submit(self, order: Order, signature: bytes) -> Accepted:
        """Validate and store ``order``; raises OrderError (refused) or ChainUnavailable
        (503)."""
        self._check_up()
        digest, pending = self._accept(order, signature)
        return self._committed(order, digest, pending)

    def needs_chain(self, order: Order) -> bool:
        """True when validating ``order`` needs a chain read (some cached value is stale)."""
        return not (self._registered.fresh(order.prosumer)
                    and self._onchain_nonce.fresh(order.prosumer)
                    and (order.interval in self._closed or self._open.fresh(order.interval))
                    and self._bounds.fresh("bounds"))

    def warm(self, order: Order, signature: bytes) -> None:
        """Read what validating ``order`` needs into the caches (blocking chain reads); a
        signature that does not match the prosumer is refused first, without any read."""
        if recover_signer(order, self.domain, signature) != order.prosumer:
            validate_order(order, signature, ValidationContext(
                self.domain, 0, (), {}, lambda _i: True, 0, 0))  # raises the signature error
        self.price_bounds()
        if self.is_registered(order.prosumer):
            self.expected_nonce(order.prosumer)
            self.interval_open(order.interval)

    async def submit_async(self, order: Order, signature: bytes) -> Accepted:
        """:meth:`submit` for an event loop: chain reads (cache misses) and the wait for the
        group commit happen off the loop; validation itself runs inline (CPU only)."""
        self._check_up()
        if self.needs_chain(order):
            await anyio.to_thread.run_sync(self.warm, order, signature)
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def on_done() -> None:
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

        digest, pending = self._accept(order, signature, on_done)
        await done
        return self._committed(order, digest, pending)

    def close_interval(self, interval: int) -> None:
        """Refuse further orders for ``interval`` (persisted)."""
        with self._submit_lock:
            self.store.close_interval(int(interval), self.clock())
            self._closed.add(int(interval))

    # ---- relaying
    def _forget_prosumer(self, prosumer: str) -> None:
        self._local_next.pop(prosumer, None)
        self._onchain_nonce.forget(prosumer)

    def _placed_digests(self, interval: int) -> set[bytes]:
        return {p.digest for p in self.mc.placed_orders(interval)}

    def _resolve_sent(self, row: StoredOrder) -> tuple[str, dict[str, Any]] | None:
        """Status of an order sent in an earlier round: (status, fields) or None to resend."""
        w3 = self.chain.w3
        try:
            receipt = w3.eth.get_transaction_receipt(HexBytes(row.tx_hash or "0x"))
        except TransactionNotFound:
            receipt = None
        if receipt is not None:
            if receipt["status"] == 1:
                return "relayed", {"block_number": int(receipt["blockNumber"])}
            return "failed", {"error": "relay transaction reverted"}
        if row.digest in self._placed_digests(row.order.interval):
            return "relayed", {}
        onchain = int(self.chain.call(self.mc.market.functions.nonceOf(row.order.prosumer)))
        if onchain > row.order.nonce:
            return "failed", {"error": f"nonce {row.order.nonce} was used by another order"}
        return None

    def relay_once(self) -> RelayReport:
        """Send waiting orders (oldest first) and await their receipts; see module docstring."""
        report = RelayReport()
        with self._relay_lock:
            rows = self.store.unfinished(self.settings.relay_batch)
            if not rows:
                return report
            relayer = self.chain.account(self.settings.relayer)
            try:
                fees = self.chain._fees()  # one fee quote per batch (Chain's own rule)
                sent: list[tuple[StoredOrder, HexBytes, dict[str, Any]]] = []
                for row in rows:
                    if row.status == "sent":
                        resolved = self._resolve_sent(row)
                        if resolved is not None:
                            status, fields = resolved
                            self._finish(row, status, report, **fields)
                            continue
                    fn = self.mc.market.functions.submitOrderSigned(row.order.as_abi_tuple(),
                                                                    row.signature)
                    tx = {"to": self.mc.market.address, "data": fn._encode_transaction_data(),
                          "gas": self.settings.relay_gas, **fees}
                    try:
                        tx_hash, full = self.chain.send(tx, relayer)
                    except ContractRevert as exc:
                        self._finish(row, "failed", report, error=f"contract refused: {exc}")
                        continue
                    sent.append((row, tx_hash, full))
                    report.sent += 1
                self.store.mark_many([(row.seq, "sent", {"tx_hash": h.to_0x_hex()})
                                      for row, h, _ in sent])
                self._await(sent, report)
            except (ChainError, OSError) as exc:
                self.chain.nonces.resync(relayer.address)
                self._set_down(exc)
                if isinstance(exc, ChainUnavailable):
                    raise
                raise self._unavailable(exc) from exc
        return report

    def _await(self, sent: list[tuple[StoredOrder, HexBytes, dict[str, Any]]],
               report: RelayReport) -> None:
        deadline = time.monotonic() + self.settings.receipt_timeout_s
        waiting = list(sent)
        while waiting:
            still = []
            done: list[tuple[StoredOrder, str, dict[str, Any]]] = []
            for row, tx_hash, full in waiting:
                try:
                    receipt = self.chain.w3.eth.get_transaction_receipt(tx_hash)
                except TransactionNotFound:
                    still.append((row, tx_hash, full))
                    continue
                fields: dict[str, Any] = {"block_number": int(receipt["blockNumber"])}
                status = "relayed"
                if receipt["status"] != 1:
                    try:  # Chain.wait replays the failed call to name the revert
                        self.chain.wait(tx_hash, full)
                        fields = {"error": "relay transaction failed"}
                    except ContractRevert as exc:
                        fields = {"error": f"contract refused: {exc}"}
                    status = "failed"
                done.append((row, status, fields))
            self.store.mark_many([(row.seq, status, fields) for row, status, fields in done])
            for row, status, fields in done:
                self._count(row, status, report, fields)
            waiting = still
            if waiting:
                if time.monotonic() > deadline:
                    report.waiting += len(waiting)  # stay "sent"; resolved next round
                    return
                time.sleep(0.02)

    def _finish(self, row: StoredOrder, status: str, report: RelayReport, **fields: Any) -> None:
        self.store.mark(row.seq, status, **fields)
        self._count(row, status, report, fields)

    def _count(self, row: StoredOrder, status: str, report: RelayReport,
               fields: dict[str, Any]) -> None:
        if status == "failed":
            report.failed += 1
            self._forget_prosumer(row.order.prosumer)
            log.warning("order 0x%s of %s failed on-chain: %s", row.digest.hex(),
                        row.order.prosumer, fields.get("error"))
        else:
            report.relayed += 1

    def flush(self, interval: int | None = None, timeout_s: float = 120.0) -> None:
        """Relay until no order (of ``interval``, or at all) is waiting; ChainUnavailable if
        the node stays away, TimeoutError after ``timeout_s``."""
        end = time.monotonic() + timeout_s
        while True:
            rows = [r for r in self.store.unfinished(10**9)
                    if interval is None or r.order.interval == int(interval)]
            if not rows:
                return
            self.relay_once()
            if time.monotonic() > end:
                raise TimeoutError(f"{len(rows)} orders still waiting for the chain")

    def settle_interval(self, interval: int) -> tuple[Any, Any]:
        """Close ``interval``, relay its orders, then commit, clear and settle it on-chain."""
        self.close_interval(interval)
        self.flush(interval)
        return self.mc.settle_interval(int(interval))

    # ---- background thread
    def probe(self) -> bool:
        """Ask the node for its latest block; updates ``chain_ok`` and ``last_block``."""
        try:
            self.last_block = int(self.chain.block_number)
        except Exception as exc:  # any failure to answer counts as down
            self._set_down(exc)
            return False
        if not self.chain_ok:
            log.warning("chain node reachable again (block %d)", self.last_block)
        self.chain_ok = True
        self.last_error = None
        self.last_probe_monotonic = time.monotonic()
        return True

    def refresh_caches(self) -> None:
        """Reload cached contract state before it expires (keeps reads off requests)."""
        try:
            budget = self.settings.refresh_per_tick  # chain reads per tick, all caches
            for cache in self._caches:
                budget = cache.refresh(budget)
        except (ChainUnavailable, ContractRevert) as exc:
            log.debug("cache refresh stopped: %s", exc)

    def run(self, relay: bool = True) -> None:
        """Probe the node every ``probe_interval_s`` and (``relay``) relay stored orders,
        until :meth:`stop`. Runs in the thread of :meth:`start`, or in a process of its own
        (``python -m market.gateway.relay``)."""
        wait_s = self.settings.probe_interval_s
        while not self._stop.is_set():
            due = time.monotonic() - self.last_probe_monotonic >= wait_s
            if (due or not self.chain_ok) and not self.probe():
                self._down_wait.sleep(self._stop)
                continue
            if due:
                self.refresh_caches()
            if not relay:
                self._stop.wait(wait_s)
                continue
            try:
                report = self.relay_once()
            except ChainUnavailable:
                self._down_wait.sleep(self._stop)
                continue
            except Exception:  # keep relaying whatever one batch did
                log.exception("relay round failed")
                report = RelayReport()
            self._down_wait.reset()
            if report.sent == 0 and report.relayed == 0 and report.failed == 0:
                self._wake.wait(self.settings.idle_sleep_s)
                self._wake.clear()

    def start(self, relay: bool = True) -> None:
        """Start the background thread: probe, and relay when ``relay`` (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, args=(relay,), name="order-relayer",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the background relayer (waits for the current batch)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
