"""One interval end to end: local auction, community battery, grid, and the ``settle()`` call.

Steps (all integer, deterministic; docs/market.md has a worked example):

1. Local auction (:mod:`market.clearing`) at the clearing price ``p*``.
2. Residual: what the orders did not trade locally. The battery trades at ``p*``, so only
   orders whose limit accepts ``p*`` can trade with it: unfilled sellers asking ``<= p*``
   (surplus ``S``) or unfilled buyers bidding ``>= p*`` (shortfall ``D``); after a uniform-price
   auction at most one of the two is non-zero. Residual ``R = S - D`` Wh.
3. Battery (:mod:`market.battery`): power inside its band and SoC, energy ``E(P)``. It takes
   ``min(E, S)`` from the surplus sellers or gives ``min(-E, D)`` to the short buyers, in
   auction priority order, at ``p*``. If the band forces more than the residual, the battery
   buys the rest from the grid at the retail tariff or sells it at the feed-in tariff.
4. Grid: unfilled sellers asking ``<= feed-in`` sell to the grid at the feed-in tariff;
   unfilled buyers bidding ``>= retail`` buy from it at the retail tariff. An order at the
   feed-in (sell) or retail (buy) tariff is thus always filled ("must trade"); any other
   remainder stays unfilled (nobody trades beyond their limit).

What goes on-chain (``settle_args``): the interval's whole book (every placed order, in
placement order: the contract checks it against its hash chain of ``OrderPlaced``) and the
trades between book orders, summed per (buy order, sell order) and sorted by their indices
(``GRID_ORDER_REF``, ``BATTERY_ORDER_REF`` for the grid and the battery), so replays compare
byte for byte. The contract derives each trade's price and checks it against both orders'
limits and their fills against their energy. A member's own buy matched with its own sell nets
out: that self-trade is dropped from the settlement (the contract rejects it), it moves neither
energy nor money. ``trades`` sums the same per (buyer, seller, price) for statements.

Orders above ``MAX_CLEARING_ENERGY_WH`` (about 1.1 TWh; the contract's bound is set at
deployment) are left out of the clearing, listed in ``IntervalClearing.excluded``, but stay in
the book: integer sums of the book then always fit in int64.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from eth_utils import to_checksum_address

from market.battery import BatteryDispatch, BatteryParams, dispatch
from market.clearing import LocalClearing, OrderBook, PriceRule, clear_book
from market.orders import BookEntry, PlacedOrder, Side, book_entry, book_hash

GRID_ADDRESS = "0x0000000000000000000000000000000000000000"
MAX_CLEARING_ENERGY_WH = 2**40
#: Counterparty references in order-level trades (non-negative values index the book).
BATTERY_REF = -1
GRID_REF = -2
#: The contract's party references of a trade that is not an order (``GRID_REF``/``BATTERY_REF``
#: of GridMarket).
GRID_ORDER_REF = 2**32 - 1
BATTERY_ORDER_REF = 2**32 - 2
#: ``GridMarket.Trade``: (buyOrder, sellOrder, energyWh).
OrderTradeArgs = tuple[int, int, int]
SettleArgs = tuple[int, int, int, list[BookEntry], list[OrderTradeArgs]]


class UniformPriceError(ValueError):
    """A result with several local prices (pay-as-bid) cannot settle on the market contract."""


@dataclass(frozen=True)
class MarketParams:
    """Market-wide parameters (prices in micro-euro per kWh, interval length in s).

    Tariffs are the grid's: ``retail`` for grid -> member, ``feed_in`` for member -> grid.
    The reference price (used when nothing crosses locally) is their midpoint, rounded down.
    """

    interval_s: int
    retail_price_micro_eur_per_kwh: int
    feed_in_price_micro_eur_per_kwh: int
    rule: PriceRule = PriceRule.PAY_AS_CLEAR

    def __post_init__(self) -> None:
        object.__setattr__(self, "rule", PriceRule(self.rule))
        if self.interval_s <= 0:
            raise ValueError(f"interval length must be positive, got {self.interval_s} s")
        if not 0 <= self.feed_in_price_micro_eur_per_kwh <= self.retail_price_micro_eur_per_kwh:
            raise ValueError(
                f"need 0 <= feed-in ({self.feed_in_price_micro_eur_per_kwh}) <= retail "
                f"({self.retail_price_micro_eur_per_kwh}) micro-EUR/kWh"
            )

    @property
    def reference_price_micro_eur_per_kwh(self) -> int:
        """Midpoint of the feed-in and retail tariffs (rounded down)."""
        return (self.retail_price_micro_eur_per_kwh + self.feed_in_price_micro_eur_per_kwh) // 2


@dataclass(frozen=True, order=True)
class Trade:
    """One settlement trade as the contract's ``Trade`` struct (grid = ``address(0)``)."""

    buyer: str
    seller: str
    energy_wh: int
    price_micro_eur_per_kwh: int

    def as_tuple(self) -> tuple[str, str, int, int]:
        """ABI tuple ``(buyer, seller, energyWh, priceMicroEurPerKwh)``."""
        return (self.buyer, self.seller, self.energy_wh, self.price_micro_eur_per_kwh)

    @classmethod
    def from_tuple(cls, t: Sequence[Any]) -> Trade:
        """From an ABI tuple or a dict with the contract's field names."""
        if isinstance(t, dict):
            t = (t["buyer"], t["seller"], t["energyWh"], t["priceMicroEurPerKwh"])
        return cls(to_checksum_address(t[0]), to_checksum_address(t[1]), int(t[2]), int(t[3]))


@dataclass(frozen=True)
class OrderTrade:
    """An order-level trade: ``buy``/``sell`` index the book, or are BATTERY_REF/GRID_REF."""

    buy: int
    sell: int
    energy_wh: int
    price_micro_eur_per_kwh: int


@dataclass(frozen=True, eq=False)
class IntervalClearing:
    """Everything decided for one interval; ``settle_args()`` is what goes on-chain."""

    interval: int
    params: MarketParams
    book: OrderBook
    local: LocalClearing
    book_hash: bytes
    clearing_price_micro_eur_per_kwh: int
    battery_account: str | None
    battery: BatteryDispatch | None
    trade_buy: np.ndarray  # order-level trades: book row or BATTERY_REF/GRID_REF
    trade_sell: np.ndarray
    trade_energy_wh: np.ndarray
    trade_price_micro_eur_per_kwh: np.ndarray
    trades: tuple[Trade, ...]
    filled_wh: np.ndarray
    placed: tuple[PlacedOrder, ...] = ()  # every order of the interval, placement order
    positions: np.ndarray | None = None  # book row -> index in ``placed``
    excluded: tuple[PlacedOrder, ...] = ()

    @property
    def order_trades(self) -> tuple[OrderTrade, ...]:
        """Order-level trades (local, battery, grid) in the order they were decided."""
        return tuple(
            OrderTrade(int(b), int(s), int(e), int(p))
            for b, s, e, p in zip(self.trade_buy, self.trade_sell, self.trade_energy_wh,
                                  self.trade_price_micro_eur_per_kwh, strict=True)
        )

    @property
    def battery_power_w(self) -> int:
        """Battery power in W (charging positive; 0 without a battery)."""
        return 0 if self.battery is None else self.battery.power_w

    def onchain_trades(self) -> list[OrderTradeArgs]:
        """Order-level trades as ``settle`` takes them: summed per (buy order, sell order) with
        book rows as indices into ``placed`` (grid and battery as the contract's refs), self-trades
        dropped, sorted by (buy, sell)."""
        positions = (range(len(self.book)) if self.positions is None
                     else self.positions.tolist())
        special = {BATTERY_REF: BATTERY_ORDER_REF, GRID_REF: GRID_ORDER_REF}
        prosumers = [p.order.prosumer for p in self.book.orders]
        totals: dict[tuple[int, int], int] = {}
        for b, s, e in zip(self.trade_buy.tolist(), self.trade_sell.tolist(),
                           self.trade_energy_wh.tolist(), strict=True):
            if e <= 0 or (b >= 0 and s >= 0 and prosumers[b] == prosumers[s]):
                continue  # nothing traded, or a member's buy against its own sell
            key = (positions[b] if b >= 0 else special[b], positions[s] if s >= 0 else special[s])
            totals[key] = totals.get(key, 0) + int(e)
        return [(b, s, e) for (b, s), e in sorted(totals.items())]

    def fills_wh(self) -> list[int]:
        """Wh filled per placed order by :meth:`onchain_trades` (what the contract hashes into
        ``fillsHash``)."""
        fills = [0] * len(self.placed)
        for buy, sell, energy in self.onchain_trades():
            for ref in (buy, sell):
                if ref < BATTERY_ORDER_REF:
                    fills[ref] += energy
        return fills

    def settle_args(self) -> SettleArgs:
        """Arguments of ``settle(interval, clearingPrice, batteryPowerW, book, trades)``.

        Raises UniformPriceError for a pay-as-bid result with more than one local price.
        """
        prices = {
            t.price_micro_eur_per_kwh
            for t in self.trades
            if GRID_ADDRESS not in (t.buyer, t.seller)
        }
        if prices - {self.clearing_price_micro_eur_per_kwh}:
            raise UniformPriceError(
                f"interval {self.interval} has local trades at {sorted(prices)} micro-EUR/kWh "
                f"({self.params.rule}); the market contract settles one uniform price only"
            )
        return (
            self.interval,
            self.clearing_price_micro_eur_per_kwh,
            self.battery_power_w,
            [book_entry(p.order) for p in self.placed],
            self.onchain_trades(),
        )


def _take_in_priority(priority: np.ndarray, available: np.ndarray, amount: int) -> np.ndarray:
    """Per book row, how much of ``amount`` Wh is taken from ``available[priority]`` in order."""
    avail = available[priority]
    before = np.cumsum(avail) - avail
    take = np.clip(amount - before, 0, avail)
    out = np.zeros_like(available)
    out[priority] = take
    return out


_TradeArrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _order_trades_from(
    priority: np.ndarray, energy: np.ndarray, counterparty: int, price: int, side: Side
) -> _TradeArrays:
    """Order-level trades (buy, sell, energy, price arrays) of the ``side`` orders in
    ``priority`` order with one counterparty."""
    rows = priority[energy[priority] > 0].astype(np.int64)
    other = np.full(len(rows), counterparty, dtype=np.int64)
    prices = np.full(len(rows), price, dtype=np.int64)
    if side == Side.SELL:
        return other, rows, energy[rows], prices
    return rows, other, energy[rows], prices


def _one_trade(buy: int, sell: int, energy_wh: int, price: int) -> _TradeArrays:
    return (np.array([buy], np.int64), np.array([sell], np.int64),
            np.array([energy_wh], np.int64), np.array([price], np.int64))


def _clearable_book(
    interval: int, orders: list[PlacedOrder], inactive: Collection[str]
) -> tuple[bytes, OrderBook, tuple[PlacedOrder, ...], np.ndarray]:
    """The book hash of all ``orders`` (placement order), the book of the clearable ones, the
    excluded ones (above ``MAX_CLEARING_ENERGY_WH`` Wh or of an ``inactive`` prosumer) and each
    book row's index in ``orders``."""
    h = book_hash(book_entry(p.order) for p in orders)
    gone = {to_checksum_address(a) for a in inactive}
    out = [p.order.energy_wh > MAX_CLEARING_ENERGY_WH or p.order.prosumer in gone
           for p in orders]
    excluded = tuple(p for p, x in zip(orders, out, strict=True) if x)
    book = OrderBook.from_orders(interval, [p for p, x in zip(orders, out, strict=True) if not x])
    positions = np.array([i for i, x in enumerate(out) if not x], dtype=np.int64)
    return h, book, excluded, positions


def _local_trades(local: LocalClearing) -> _TradeArrays:
    """Step 1: the local auction's order-level trades (buy, sell, Wh, micro-EUR/kWh) as int64."""
    return (local.trade_buy.astype(np.int64), local.trade_sell.astype(np.int64),
            local.trade_energy_wh.astype(np.int64),
            local.trade_price_micro_eur_per_kwh.astype(np.int64))


def _battery_trades(
    book: OrderBook, local: LocalClearing, residual: np.ndarray, params: MarketParams,
    battery: BatteryParams, soc_wh: int, band_w: tuple[int, int],
    reserve_wh: int | None = None,
) -> tuple[BatteryDispatch, list[_TradeArrays], np.ndarray]:
    """Steps 2-3: the battery's dispatch for the residual (Wh per book row) at ``p*``, its
    trades with the members in auction priority and with the grid (what the band forces beyond
    the residual); returns (dispatch, trades, residual Wh left per book row)."""
    p_star = local.clearing_price_micro_eur_per_kwh
    price = book.price_micro_eur_per_kwh
    surplus_ok = ~book.is_buy & (price <= p_star)
    short_ok = book.is_buy & (price >= p_star)
    surplus_wh = int(residual[surplus_ok].sum())
    short_wh = int(residual[short_ok].sum())
    dispatched = dispatch(battery, soc_wh, band_w, surplus_wh - short_wh, params.interval_s,
                          reserve_wh)
    e_batt = dispatched.energy_wh
    trades: list[_TradeArrays] = []
    if e_batt > 0:
        with_members = min(e_batt, surplus_wh)
        sells = local.sell_priority
        take = _take_in_priority(sells, np.where(surplus_ok, residual, 0), with_members)
        trades.append(_order_trades_from(sells, take, BATTERY_REF, p_star, Side.SELL))
        residual = residual - take
        if e_batt > with_members:
            trades.append(_one_trade(BATTERY_REF, GRID_REF, e_batt - with_members,
                                     params.retail_price_micro_eur_per_kwh))
    elif e_batt < 0:
        with_members = min(-e_batt, short_wh)
        buys = local.buy_priority
        take = _take_in_priority(buys, np.where(short_ok, residual, 0), with_members)
        trades.append(_order_trades_from(buys, take, BATTERY_REF, p_star, Side.BUY))
        residual = residual - take
        if -e_batt > with_members:
            trades.append(_one_trade(GRID_REF, BATTERY_REF, -e_batt - with_members,
                                     params.feed_in_price_micro_eur_per_kwh))
    return dispatched, trades, residual


def _grid_trades(
    book: OrderBook, local: LocalClearing, residual: np.ndarray, params: MarketParams
) -> tuple[list[_TradeArrays], np.ndarray]:
    """Step 4: unfilled sellers asking <= feed-in sell to the grid, unfilled buyers bidding
    >= retail buy from it; returns (their trades, residual Wh left per book row)."""
    price = book.price_micro_eur_per_kwh
    to_grid = np.where(~book.is_buy & (price <= params.feed_in_price_micro_eur_per_kwh),
                       residual, 0)
    from_grid = np.where(book.is_buy & (price >= params.retail_price_micro_eur_per_kwh),
                         residual, 0)
    trades = [
        _order_trades_from(local.sell_priority, to_grid, GRID_REF,
                           params.feed_in_price_micro_eur_per_kwh, Side.SELL),
        _order_trades_from(local.buy_priority, from_grid, GRID_REF,
                           params.retail_price_micro_eur_per_kwh, Side.BUY),
    ]
    return trades, residual - to_grid - from_grid


def clear_interval(
    interval: int,
    orders: Sequence[PlacedOrder],
    params: MarketParams,
    battery: BatteryParams | None = None,
    soc_wh: int | None = None,
    band_w: tuple[int, int] | None = None,
    inactive: Collection[str] = (),
    reserve_wh: int | None = None,
) -> IntervalClearing:
    """Clear one interval (steps in the module docstring).

    ``battery``/``soc_wh``/``band_w`` (W, from the capacity contract) are all given or all None;
    ``reserve_wh``: the battery reserve the oracle published for the interval (None: none).
    Orders of the ``inactive`` prosumers (removed from the market after placing them: the
    contract would reject their trades) are left out like oversized ones (``excluded``).
    Raises ``market.battery.BatteryInfeasibleError`` if the band and SoC allow no power.
    """
    if battery is not None and (soc_wh is None or band_w is None):
        raise ValueError("a battery needs its SoC (Wh) and its band (W) for the interval")
    placed = sorted(orders, key=lambda p: (p.placed_seq, p.digest))  # the contract's book order
    h, book, excluded, positions = _clearable_book(interval, placed, inactive)
    local = clear_book(book, params.reference_price_micro_eur_per_kwh, params.rule)
    residual = book.energy_wh - local.filled_wh
    trades = [_local_trades(local)]
    dispatched: BatteryDispatch | None = None
    if battery is not None:
        assert soc_wh is not None and band_w is not None
        dispatched, with_battery, residual = _battery_trades(book, local, residual, params,
                                                             battery, soc_wh, band_w,
                                                             reserve_wh)
        trades += with_battery
    with_grid, residual = _grid_trades(book, local, residual, params)
    trades += with_grid
    t_buy, t_sell, t_energy, t_price = (np.concatenate(col) for col in zip(*trades, strict=True))
    result = IntervalClearing(
        interval=int(interval),
        params=params,
        book=book,
        local=local,
        book_hash=h,
        clearing_price_micro_eur_per_kwh=local.clearing_price_micro_eur_per_kwh,
        battery_account=None if battery is None else battery.account,
        battery=dispatched,
        trade_buy=t_buy,
        trade_sell=t_sell,
        trade_energy_wh=t_energy,
        trade_price_micro_eur_per_kwh=t_price,
        trades=(),
        filled_wh=book.energy_wh - residual,
        placed=tuple(placed),
        positions=positions,
        excluded=excluded,
    )
    object.__setattr__(result, "trades", aggregate_trades(result))
    return result


def aggregate_trades(result: IntervalClearing) -> tuple[Trade, ...]:
    """Order-level trades summed per (buyer, seller, price), sorted by address and price.

    Self-trades (a member's buy against its own sell) are dropped. Vectorised: parties are
    numbered (prosumers, then the battery, then the grid), grouped with ``np.unique``.
    """
    index: dict[str, int] = {}
    row_party = np.fromiter(
        (index.setdefault(p.order.prosumer, len(index)) for p in result.book.orders),
        np.int64, len(result.book),
    )
    n = len(index)
    battery = result.battery_account
    parties = [*index, battery if battery is not None else "", GRID_ADDRESS]
    lookup = np.concatenate((row_party, [n + 1, n]))  # ref -2 -> grid, ref -1 -> battery

    def pid(refs: np.ndarray) -> np.ndarray:
        return lookup[np.where(refs >= 0, refs, len(row_party) + 2 + refs)]

    buyer, seller = pid(result.trade_buy), pid(result.trade_sell)
    keep = (buyer != seller) & (result.trade_energy_wh > 0)
    if battery is None and np.any(((buyer == n) | (seller == n)) & keep):
        raise ValueError("battery trades in a clearing without a battery")
    keys = np.stack((buyer[keep], seller[keep], result.trade_price_micro_eur_per_kwh[keep]), 1)
    if len(keys) == 0:
        return ()
    groups, inverse = np.unique(keys, axis=0, return_inverse=True)
    energy = np.zeros(len(groups), dtype=np.int64)
    np.add.at(energy, inverse.ravel(), result.trade_energy_wh[keep])
    rank = np.argsort(np.array([a.lower() for a in parties]), kind="stable")
    position = np.empty_like(rank)
    position[rank] = np.arange(len(rank))
    order = np.lexsort((groups[:, 2], position[groups[:, 1]], position[groups[:, 0]]))
    return tuple(
        Trade(parties[b], parties[s], int(e), int(p))
        for (b, s, p), e in zip(groups[order].tolist(), energy[order].tolist(), strict=True)
    )
