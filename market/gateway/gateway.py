"""The order gateway: validate a signed order, store it durably, relay it to the market contract.

This is the one code path by which orders enter the market, used by ``POST /v1/orders`` and by
in-process callers (the day simulation):

1. :meth:`OrderGateway.submit` makes the signature canonical (``market.orders.
   canonical_signature``: the form the contract's ECDSA check accepts), checks the order with
   :func:`market.orders.validate_order` (signature, registered prosumer, nonce, deadline,
   energy, price, interval window, open interval) against a mirror of the market contract's
   state (registered prosumers, nonces, the bounds it states, open intervals; cached for
   ``cache_ttl_s`` / ``interval_ttl_s`` and refreshed ahead of expiry by the background thread)
   and the chain's time (:class:`~market.gateway.watch.ChainWatch`), limits each prosumer to
   ``max_orders_per_interval`` orders per interval (so the settler's gas spent on one
   prosumer's orders is bounded: at most that many orders of ``relay_gas`` each), then
   commits it to the SQLite :class:`~market.gateway.store.OrderStore`. Only then is it
   *accepted* (HTTP 201). The expected nonce is one more than the prosumer's last live stored
   order, or the contract's ``nonceOf`` when that is higher, so a client can send its next
   order before the previous one is on-chain.
2. :meth:`OrderGateway.relay_once` runs one round of the
   :class:`~market.gateway.relayer.Relayer` (send, confirm, recover; see there).
3. :meth:`OrderGateway.settle_interval` closes the interval here (no more orders), relays
   every order of it that is still waiting, then runs ``MarketChain.settle_interval``.

Node down: while the last probe (every ``probe_interval_s``) or a read failed, ``submit`` raises
``ChainUnavailable`` and nothing is stored (HTTP 503). A node that is not the deployment's chain
any more (restarted empty, wiped) raises ``ChainResetError`` (HTTP 503 ``chain_reset``); the
relay sends nothing to it. An order acknowledged just before the node went away stays in SQLite
as ``pending``/``sent`` and is relayed when the node answers again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread

from gridshare.chain.backoff import Backoff
from gridshare.chain.errors import ChainError, ChainUnavailable, ContractRevert
from gridshare.chain.identity import ChainIdentity, block_hash
from market.chain import MarketChain
from market.orders import (
    BadNonceError,
    Order,
    OrderError,
    ValidationContext,
    canonical_signature,
    recover_digest_signer,
    recover_signer,
    validate_order,
)

from .locks import RelayLock
from .relayer import MAX_ORDERS_PER_TX, Relayer, RelayReport, RelayState
from .store import DuplicateOrderError, OrderStore
from .watch import ChainWatch

log = logging.getLogger(__name__)

#: Interval ids tracked per prosumer for the order quota before old ones are dropped.
MAX_QUOTA_ENTRIES = 200_000


class ReplayedOrderError(OrderError):
    """The same order (digest) or the prosumer's nonce is already stored."""

    code = "bad_nonce"
    field = "nonce"


class MarketPausedError(OrderError):
    """The market contract is paused: it takes no orders (HTTP 503)."""

    code = "market_paused"


class TooManyOrdersError(OrderError):
    """The prosumer placed the most orders one interval takes (settler gas bound)."""

    code = "too_many_orders"
    field = "interval"


@dataclass(frozen=True)
class GatewaySettings:
    """Tuning of the gateway and its relay. Times in seconds; gas in gas units.

    ``max_energy_wh`` and ``max_intervals_ahead`` cap what the contract states
    (``maxOrderEnergyWh``, ``maxIntervalsAhead``) and stand in for it on a contract that states
    none; ``confirmations``: blocks on top of an ``OrderPlaced`` before its order is
    ``relayed``; ``stall_s``: a transaction not mined for this long is re-broadcast, then
    replaced with ``fee_bump`` times its fees; ``max_waiting_age_s``: ``/healthz`` is not ok
    while an order waits longer (the bound on how far the relay may fall behind);
    ``relay_heartbeat_s``: nor while orders wait and the relay was not heard from for longer;
    ``send_workers``: connections the relay sends a round's transactions over at once;
    ``relay_batch``: orders per relay round; ``orders_per_tx``: orders per transaction
    (``submitOrdersSigned``, at most the contract's 200); ``relay_gas``: gas limit per order
    (a transaction of n orders has n times it).
    """

    relayer: str = "settler"
    cache_ttl_s: float = 20.0
    interval_ttl_s: float = 2.0
    refresh_per_tick: int = 24
    probe_interval_s: float = 0.5
    identity_every_s: float = 10.0
    relay_batch: int = 200
    orders_per_tx: int = 50
    max_in_flight: int = 1000
    send_workers: int = 4
    relay_gas: int = 200_000
    idle_sleep_s: float = 0.05
    confirmations: int = 0
    stall_s: float = 10.0
    fee_bump: float = 1.25
    log_window_blocks: int = 500
    max_energy_wh: int = 10_000_000
    max_intervals_ahead: int = 96
    max_orders_per_interval: int = 16
    max_waiting_age_s: float = 30.0
    relay_heartbeat_s: float = 15.0

    def __post_init__(self) -> None:
        if min(self.cache_ttl_s, self.interval_ttl_s) < 0 or self.probe_interval_s <= 0 \
                or self.idle_sleep_s <= 0 or self.stall_s <= 0 or self.identity_every_s <= 0:
            raise ValueError("cache_ttl_s, interval_ttl_s must be >= 0; probe_interval_s, "
                             "identity_every_s, idle_sleep_s and stall_s > 0")
        if min(self.relay_batch, self.max_in_flight, self.send_workers) < 1 \
                or self.relay_gas < 21_000 \
                or self.confirmations < 0 or self.fee_bump < 1.1 or self.log_window_blocks < 1:
            raise ValueError("relay_batch, max_in_flight, log_window_blocks >= 1, relay_gas "
                             ">= 21000, confirmations >= 0, fee_bump >= 1.1")
        if not 1 <= self.orders_per_tx <= MAX_ORDERS_PER_TX:
            raise ValueError(f"orders_per_tx must be in 1..{MAX_ORDERS_PER_TX} (the contract's "
                             f"MAX_ORDERS_PER_BATCH), got {self.orders_per_tx}")
        if self.max_energy_wh < 1 or self.max_intervals_ahead < 0 or \
                self.max_orders_per_interval < 1 or self.max_waiting_age_s <= 0:
            raise ValueError("max_energy_wh, max_orders_per_interval >= 1, "
                             "max_intervals_ahead >= 0, max_waiting_age_s > 0")


@dataclass(frozen=True)
class Accepted:
    """An accepted order: its EIP-712 digest and place in the relay queue."""

    digest: bytes
    seq: int
    order: Order


@dataclass(frozen=True)
class MarketBounds:
    """What an order may hold: prices micro-euro per kWh, energy Wh, interval window ahead;
    ``stated_by`` says where the energy and window bounds come from; ``paused``: the contract
    takes no orders now."""

    min_price_micro_eur_per_kwh: int
    max_price_micro_eur_per_kwh: int
    max_energy_wh: int
    max_intervals_ahead: int
    stated_by: str
    paused: bool = False


@dataclass
class Health:
    """The gateway's view for ``/healthz``: problems empty = ok."""

    chain: str
    chain_detail: str | None
    relay: RelayState | None
    relay_heartbeat_age_s: float | None
    waiting: int
    oldest_waiting_age_s: float | None
    problems: list[str] = field(default_factory=list)


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
        self._loading: dict[Any, Future[Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: Any, load: Callable[[], Any]) -> Any:
        """The value of ``key``; on a miss one caller loads it and concurrent callers of the
        same key wait for that load (its value or its exception), not a read each."""
        now = time.monotonic()
        with self._lock:
            hit = self._data.get(key)
            if hit is not None and now - hit[0] <= self.ttl_s:
                self._data[key] = (hit[0], hit[1], hit[2], now)
                return hit[1]
            loading = self._loading.get(key)
            if loading is None:
                loading = self._loading[key] = Future()
                owner = True
            else:
                owner = False
        if not owner:
            return loading.result()
        try:
            value = load()
        except BaseException as exc:
            loading.set_exception(exc)
            raise
        else:
            loading.set_result(value)
            with self._lock:
                self._data[key] = (now, value, load, now)
            return value
        finally:
            with self._lock:
                self._loading.pop(key, None)

    def fresh(self, key: Any) -> bool:
        with self._lock:
            hit = self._data.get(key)
        return hit is not None and time.monotonic() - hit[0] <= self.ttl_s

    def refresh(self, limit: int) -> int:
        """Reload up to ``limit`` entries past their refresh point that were used since they
        were loaded, oldest first (an entry nobody asked for again, such as a past interval,
        just expires); returns the budget left. Chain errors propagate. The refresh point is
        between 0.5 and 0.8 of the TTL, fixed per key: keys loaded together (a burst of new
        prosumers) are reloaded spread over the TTL, not in one burst every TTL/2 that stalls
        the requests sharing the process."""
        now = time.monotonic()
        with self._lock:
            items = sorted(self._data.items(), key=lambda kv: kv[1][0])
        for key, (loaded, _value, load, used) in items:
            if now - used > self.idle_drop_s:
                self.forget(key)
            elif now - loaded >= self.ttl_s * _refresh_point(key) and used > loaded \
                    and limit > 0:
                limit -= 1
                value = load()
                with self._lock:
                    self._data[key] = (time.monotonic(), value, load, used)
        return limit

    def forget(self, key: Any) -> None:
        with self._lock:
            self._data.pop(key, None)


def _refresh_point(key: Any) -> float:
    """Share of the TTL after which ``key`` is reloaded: 0.5..0.8, fixed per key (process)."""
    return 0.5 + 0.3 * ((hash(key) & 0xFFFF) / 0xFFFF)


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
    """Accepts signed orders for one market deployment (see module docstring).

    ``admit(prosumer)``, when set, is called once an order's signature is verified and may
    raise to refuse it (the API's per-address rate limit), before any other check.
    """

    def __init__(self, mc: MarketChain, store: OrderStore,
                 settings: GatewaySettings | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.mc = mc
        self.chain = mc.chain
        self.store = store
        self.settings = settings or GatewaySettings()
        self.clock = clock
        self.domain = mc.domain
        self.interval_s = int(mc.deployment.interval_s)
        self.watch = ChainWatch(mc, store, probe_interval_s=self.settings.probe_interval_s,
                                identity_every_s=self.settings.identity_every_s, clock=clock)
        self.admit: Callable[[str], None] | None = None
        ttl = self.settings.cache_ttl_s
        self._registered = _Cache(ttl)
        self._onchain_nonce = _Cache(ttl)
        self._open = _Cache(self.settings.interval_ttl_s)
        self._bounds = _Cache(self.settings.interval_ttl_s)
        self._caches = (self._open, self._bounds, self._registered, self._onchain_nonce)
        self._inflight: dict[str, int] = {}
        self._quota: dict[tuple[str, int], int] = {}
        self._closed: set[int] = set(store.closed_intervals())
        self._local_next: dict[str, int] = {}
        self._submit_lock = threading.RLock()
        self._relayer: Relayer | None = None
        self._relay_lock: RelayLock | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._down_wait = Backoff(self.settings.probe_interval_s, factor=1.0)

    # ---- the node (see ChainWatch)
    @property
    def chain_ok(self) -> bool:
        return self.watch.chain_ok

    @property
    def last_block(self) -> int | None:
        return self.watch.last_block

    @property
    def last_error(self) -> str | None:
        return self.watch.last_error

    def probe(self) -> bool:
        """Ask the node for its latest block (and its identity when due)."""
        return self.watch.probe()

    def _read(self, fn: Callable[[], Any]) -> Any:
        """A chain read; a failure other than a revert marks the chain down and raises
        ChainUnavailable."""
        try:
            return fn()
        except ContractRevert:
            raise
        except (ChainError, OSError) as exc:  # OSError: a socket error past the retries
            self.watch.set_down(exc)
            if isinstance(exc, ChainUnavailable):
                raise
            raise self.watch.unavailable(exc) from exc

    # ---- the contract's mirror
    def is_registered(self, prosumer: str) -> bool:
        f = self.mc.market.functions
        return bool(self._registered.get(
            prosumer, lambda: self._read(lambda: self.chain.call(f.isProsumer(prosumer)))))

    def expected_nonce(self, prosumer: str) -> int:
        """Next nonce of ``prosumer``: after its live stored orders, or the contract's if
        higher."""
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

    def bounds(self) -> MarketBounds:
        """The order bounds: the contract's (capped by the settings), or the settings' where
        the contract states none."""
        return self._bounds.get("bounds", self._load_bounds)

    def price_bounds(self) -> tuple[int, int]:
        """(min, max) limit price of the market in micro-euro per kWh."""
        b = self.bounds()
        return b.min_price_micro_eur_per_kwh, b.max_price_micro_eur_per_kwh

    def _load_bounds(self) -> MarketBounds:
        f = self.mc.market.functions
        names = {item.get("name") for item in self.mc.market.abi}
        s = self.settings

        def read(name: str) -> int:
            return int(self._read(lambda: self.chain.call(getattr(f, name)())))

        stated = "maxOrderEnergyWh" in names and "maxIntervalsAhead" in names
        return MarketBounds(
            read("minPriceMicroEurPerKwh"), read("maxPriceMicroEurPerKwh"),
            min(read("maxOrderEnergyWh"), s.max_energy_wh) if stated else s.max_energy_wh,
            min(read("maxIntervalsAhead"), s.max_intervals_ahead) if stated
            else s.max_intervals_ahead,
            "contract (capped by the API's settings)" if stated else "API settings",
            "paused" in names and bool(read("paused")))

    def window(self) -> tuple[int, int]:
        """First and last interval orders may be for now (chain time)."""
        current = self.watch.now_unix_s() // self.interval_s
        return current, current + self.bounds().max_intervals_ahead

    # ---- accepting
    def _context(self) -> ValidationContext:
        b = self.bounds()
        if b.paused:
            raise MarketPausedError(f"the market contract {self.mc.market.address} is paused: "
                                    "it takes no orders until its admin unpauses it")
        now = self.watch.now_unix_s()
        current = now // self.interval_s
        return ValidationContext(
            domain=self.domain, now_unix_s=now, registered=_Registered(self),
            next_nonce=_Nonces(self), interval_open=self.interval_open,
            min_price_micro_eur_per_kwh=b.min_price_micro_eur_per_kwh,
            max_price_micro_eur_per_kwh=b.max_price_micro_eur_per_kwh,
            max_energy_wh=b.max_energy_wh, window=(current, current + b.max_intervals_ahead),
            interval_s=self.interval_s)

    def _verify(self, order: Order, signature: bytes
                ) -> tuple[bytes, str | None, bytes | None]:
        """The canonical signature, its signer and the order's digest (None, None: a negative
        energy, refused later); calls ``admit`` for a signature of the order's prosumer."""
        signature = canonical_signature(signature)
        if order.energy_wh < 0:
            return signature, None, None
        digest = self.domain.digest(order)
        signer = recover_digest_signer(digest, signature)
        if signer == order.prosumer and self.admit is not None:
            self.admit(order.prosumer)
        return signature, signer, digest

    def _validate(self, order: Order, signature: bytes, signer: str | None,
                  digest: bytes | None) -> bytes:
        """validate_order; a nonce below the expected one is checked once more against the
        store (a relay in another process may have failed the prosumer's later orders)."""
        try:
            return validate_order(order, signature, self._context(), signer, digest)
        except BadNonceError:
            if self._inflight.get(order.prosumer) or \
                    order.nonce >= self.expected_nonce(order.prosumer):
                raise
            self._local_next.pop(order.prosumer, None)
            return validate_order(order, signature, self._context(), signer, digest)

    def _take_quota(self, order: Order) -> None:
        key = (order.prosumer, order.interval)
        used = self._quota.get(key)
        if used is None:
            if len(self._quota) > MAX_QUOTA_ENTRIES:
                current = self.watch.now_unix_s() // self.interval_s
                self._quota = {k: v for k, v in self._quota.items() if k[1] >= current}
            used = self.store.count_of(*key)
        limit = self.settings.max_orders_per_interval
        if used >= limit:
            raise TooManyOrdersError(
                f"{order.prosumer} has {used} orders for interval {order.interval}, the most "
                f"one prosumer may place per interval ({limit})")
        self._quota[key] = used + 1

    def _give_back_quota(self, order: Order) -> None:
        key = (order.prosumer, order.interval)
        if self._quota.get(key):
            self._quota[key] -= 1

    def _accept(self, order: Order, signature: bytes,
                on_done: Callable[[], None] | None = None) -> tuple[bytes, Any]:
        """Validate and queue ``order`` for the group commit; (digest, pending insert)."""
        signature, signer, digest = self._verify(order, signature)
        with self._submit_lock:
            digest = self._validate(order, signature, signer, digest)
            self._take_quota(order)
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
            self._refused_after_queue(order)
            raise ReplayedOrderError(str(exc)) from None
        except Exception:
            self._refused_after_queue(order)
            raise
        self._wake.set()
        return Accepted(digest, seq, order)

    def _refused_after_queue(self, order: Order) -> None:
        with self._submit_lock:
            self._forget_prosumer(order.prosumer)
            self._give_back_quota(order)

    def submit(self, order: Order, signature: bytes) -> Accepted:
        """Validate and store ``order``; raises OrderError (refused), ChainUnavailable or
        ChainResetError (503)."""
        self.watch.check_up()
        digest, pending = self._accept(order, signature)
        return self._committed(order, digest, pending)

    def needs_chain(self, order: Order) -> bool:
        """True when validating ``order`` needs a chain read (some cached value is stale)."""
        return self.watch.needs_check() or not (
            self._registered.fresh(order.prosumer)
            and self._onchain_nonce.fresh(order.prosumer)
            and (order.interval in self._closed or self._open.fresh(order.interval))
            and self._bounds.fresh("bounds"))

    def warm(self, order: Order, signature: bytes) -> None:
        """Read what validating ``order`` needs into the caches (blocking chain reads); a
        signature that does not match the prosumer is refused first, without any read."""
        signature = canonical_signature(signature)
        if order.energy_wh >= 0 and recover_signer(order, self.domain, signature) != \
                order.prosumer:
            validate_order(order, signature, ValidationContext(
                self.domain, 0, (), {}, lambda _i: True, 0, 0))  # raises the signature error
        self.watch.check_up()
        lo, hi = self.window()
        if self.is_registered(order.prosumer):
            self.expected_nonce(order.prosumer)
            if lo <= order.interval <= hi:
                self.interval_open(order.interval)

    async def submit_async(self, order: Order, signature: bytes) -> Accepted:
        """:meth:`submit` for an event loop: chain reads (cache misses) and the wait for the
        group commit happen off the loop; validation itself runs inline (CPU only)."""
        if self.needs_chain(order):
            await anyio.to_thread.run_sync(self.warm, order, signature)
        self.watch.check_up()
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

    def _forget_prosumer(self, prosumer: str) -> None:
        self._local_next.pop(prosumer, None)
        self._onchain_nonce.forget(prosumer)

    # ---- relaying
    @property
    def relayer(self) -> Relayer:
        """The relay of this gateway's store (made on first use: it needs the sender's key)."""
        if self._relayer is None:
            self._relayer = Relayer(self.mc, self.store, self.watch, self.settings, self.clock)
        return self._relayer

    def relay_once(self) -> RelayReport:
        """One relay round (see :class:`~market.gateway.relayer.Relayer`)."""
        return self.relayer.round()

    def flush(self, interval: int | None = None, timeout_s: float = 120.0) -> None:
        """Relay until no order (of ``interval``, or at all) is waiting; ChainUnavailable or
        ChainResetError if the node stays away or is not the chain, TimeoutError after
        ``timeout_s``."""
        end = time.monotonic() + timeout_s
        while True:
            counts = self.store.counts(interval)
            if counts["pending"] + counts["sent"] == 0:
                return
            self.watch.check_up()
            report = self.relay_once()
            if time.monotonic() > end:
                raise TimeoutError(f"{counts['pending'] + counts['sent']} orders still "
                                   "waiting for the chain")
            if not report.progressed:
                time.sleep(0.02)

    def settle_interval(self, interval: int) -> tuple[Any, Any]:
        """Close ``interval``, relay its orders, then commit, clear and settle it on-chain."""
        self.close_interval(interval)
        self.flush(interval)
        return self.mc.settle_interval(int(interval))

    # ---- health
    def health(self) -> Health:
        """Chain and relay state, backlog, and what makes the service not ok (``problems``)."""
        counts = self.store.counts()
        waiting = counts["pending"] + counts["sent"]
        oldest = self.store.oldest_unfinished_unix_s()
        age = None if oldest is None else max(0.0, self.clock() - oldest)
        relay = RelayState.from_meta(self.store.meta())
        beat = None if relay is None else max(0.0, self.clock() - relay.heartbeat_unix_s)
        out = Health(self.watch.state, self.watch.reset_reason or self.watch.last_error, relay,
                     beat, waiting, age)
        s = self.settings
        if self.watch.state != "ok":
            out.problems.append(f"chain {self.watch.state}: {out.chain_detail}")
        if relay is not None and relay.state in ("stalled", "error", "paused", "chain_down",
                                                 "chain_reset"):
            out.problems.append(f"relay {relay.state}: {relay.detail}")
        if waiting and (beat is None or beat > s.relay_heartbeat_s or relay is None
                        or relay.state == "stopped"):
            out.problems.append(f"{waiting} orders wait and no relay is running (last heard "
                                f"{'never' if beat is None else f'{beat:.0f} s ago'})")
        if age is not None and age > s.max_waiting_age_s:
            out.problems.append(f"the oldest waiting order was accepted {age:.0f} s ago "
                                f"(bound {s.max_waiting_age_s:.0f} s): the relay is behind")
        return out

    # ---- background thread
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
            due = time.monotonic() - self.watch.last_probe_monotonic >= wait_s
            if (due or self.watch.state != "ok") and not self.watch.probe():
                if relay:
                    self.relayer.waiting_for_chain()
                self._down_wait.sleep(self._stop)
                continue
            if due:
                self.refresh_caches()
            if not relay:
                self._stop.wait(wait_s)
                continue
            self._relay_step()

    def _relay_step(self) -> None:
        try:
            report = self.relay_once()
        except ChainUnavailable:
            self._down_wait.sleep(self._stop)
            return
        except Exception:  # keep relaying whatever one round did
            log.exception("relay round failed")
            report = RelayReport()
        self._down_wait.reset()
        if not report.progressed:
            self._wake.wait(self.settings.idle_sleep_s)
            self._wake.clear()

    def lock_relay(self) -> None:
        """Take the relay locks of this store and key (``RelayLockedError`` when another relay
        holds one); released by :meth:`unlock_relay` or when the process ends."""
        if self._relay_lock is not None:
            return
        key = None
        if not self.chain.is_embedded:  # the embedded chain lives in this process only
            recorded = ChainIdentity.from_meta(self.store.meta())  # works while it is down
            genesis = recorded.genesis_hash if recorded else block_hash(self.chain, 0)
            key = f"{self.chain.chain_id}-{genesis[2:14]}-{self.relayer.account.address}"
        lock = RelayLock(self.store.path, key)
        lock.acquire()
        self._relay_lock = lock

    def unlock_relay(self) -> None:
        if self._relay_lock is not None:
            self._relay_lock.release()
            self._relay_lock = None

    def start(self, relay: bool = True) -> None:
        """Start the background thread: probe, and relay when ``relay`` (idempotent); the
        relay takes the store's and key's relay locks first."""
        if self._thread is not None and self._thread.is_alive():
            return
        if relay:
            self.lock_relay()
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, args=(relay,), name="order-relayer",
                                        daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Ask :meth:`run` to return after its current round (safe in a signal handler)."""
        self._stop.set()
        self._wake.set()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the background thread (waits for the current round); publishes the relay's
        stop and releases its locks."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        if self._relay_lock is not None:
            self.relayer.stopped()
            self.unlock_relay()
