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

The grid is ``address(0)``; settlement trades are aggregated per (buyer, seller, price) and
sorted by (buyer, seller, price) so replays compare byte for byte. A member's own buy matched
with its own sell nets out: that self-trade is dropped from the settlement (the contract
rejects ``buyer == seller``), it moves neither energy nor money.

Orders above ``MAX_CLEARING_ENERGY_WH`` (about 1.1 TWh; the contract accepts any uint64) are
left out of the clearing, listed in ``IntervalClearing.excluded``, but stay in the commitment:
integer sums of the book then always fit in int64.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from eth_utils import to_checksum_address

from market.battery import BatteryDispatch, BatteryParams, dispatch
from market.clearing import LocalClearing, OrderBook, PriceRule, clear_book
from market.merkle import merkle_root
from market.orders import PlacedOrder, Side

GRID_ADDRESS = "0x0000000000000000000000000000000000000000"
MAX_CLEARING_ENERGY_WH = 2**40
#: Counterparty references in order-level trades (non-negative values index the book).
BATTERY_REF = -1
GRID_REF = -2


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
    orders_root: bytes
    clearing_price_micro_eur_per_kwh: int
    battery_account: str | None
    battery: BatteryDispatch | None
    order_trades: tuple[OrderTrade, ...]
    trades: tuple[Trade, ...]
    filled_wh: np.ndarray
    excluded: tuple[PlacedOrder, ...] = ()

    @property
    def battery_power_w(self) -> int:
        """Battery power in W (charging positive; 0 without a battery)."""
        return 0 if self.battery is None else self.battery.power_w

    def settle_args(self) -> tuple[int, bytes, int, int, list[tuple[str, str, int, int]]]:
        """Arguments of ``settle(interval, ordersRoot, clearingPrice, batteryPowerW, trades)``.

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
            self.orders_root,
            self.clearing_price_micro_eur_per_kwh,
            self.battery_power_w,
            [t.as_tuple() for t in self.trades],
        )

    def party(self, ref: int) -> str:
        """Address of an order-level counterparty reference."""
        if ref == GRID_REF:
            return GRID_ADDRESS
        if ref == BATTERY_REF:
            if self.battery_account is None:
                raise ValueError("no battery in this clearing")
            return self.battery_account
        return self.book.orders[ref].order.prosumer


def _take_in_priority(priority: np.ndarray, available: np.ndarray, amount: int) -> np.ndarray:
    """Per book row, how much of ``amount`` Wh is taken from ``available[priority]`` in order."""
    avail = available[priority]
    before = np.cumsum(avail) - avail
    take = np.clip(amount - before, 0, avail)
    out = np.zeros_like(available)
    out[priority] = take
    return out


def _order_trades_from(
    priority: np.ndarray, energy: np.ndarray, counterparty: int, price: int, side: Side
) -> list[OrderTrade]:
    """Order-level trades of the ``side`` orders in ``priority`` with one counterparty."""
    rows = priority[energy[priority] > 0]
    if side == Side.SELL:
        return [OrderTrade(counterparty, int(i), int(energy[i]), price) for i in rows]
    return [OrderTrade(int(i), counterparty, int(energy[i]), price) for i in rows]


def clear_interval(
    interval: int,
    orders: Sequence[PlacedOrder],
    params: MarketParams,
    battery: BatteryParams | None = None,
    soc_wh: int | None = None,
    band_w: tuple[int, int] | None = None,
) -> IntervalClearing:
    """Clear one interval (steps in the module docstring).

    ``battery``/``soc_wh``/``band_w`` (W, from the capacity contract) are all given or all None.
    Raises ``market.battery.BatteryInfeasibleError`` if the band and SoC allow no power.
    """
    if battery is not None and (soc_wh is None or band_w is None):
        raise ValueError("a battery needs its SoC (Wh) and its band (W) for the interval")
    orders = list(orders)
    root = merkle_root(p.digest for p in orders)
    excluded = tuple(p for p in orders if p.order.energy_wh > MAX_CLEARING_ENERGY_WH)
    book = OrderBook.from_orders(
        interval, [p for p in orders if p.order.energy_wh <= MAX_CLEARING_ENERGY_WH]
    )
    local = clear_book(book, params.reference_price_micro_eur_per_kwh, params.rule)
    p_star = local.clearing_price_micro_eur_per_kwh
    price = book.price_micro_eur_per_kwh
    residual = book.energy_wh - local.filled_wh
    sells, buys = local.sell_priority, local.buy_priority
    surplus_ok = ~book.is_buy & (price <= p_star)
    short_ok = book.is_buy & (price >= p_star)
    surplus_wh = int(residual[surplus_ok].sum())
    short_wh = int(residual[short_ok].sum())

    trades: list[OrderTrade] = [
        OrderTrade(int(b), int(s), int(e), int(p))
        for b, s, e, p in zip(local.trade_buy, local.trade_sell, local.trade_energy_wh,
                              local.trade_price_micro_eur_per_kwh, strict=True)
    ]
    dispatched: BatteryDispatch | None = None
    if battery is not None:
        assert soc_wh is not None and band_w is not None
        dispatched = dispatch(battery, soc_wh, band_w, surplus_wh - short_wh, params.interval_s)
        e_batt = dispatched.energy_wh
        if e_batt > 0:
            with_members = min(e_batt, surplus_wh)
            take = _take_in_priority(sells, np.where(surplus_ok, residual, 0), with_members)
            trades += _order_trades_from(sells, take, BATTERY_REF, p_star, Side.SELL)
            residual = residual - take
            if e_batt > with_members:
                trades.append(OrderTrade(BATTERY_REF, GRID_REF, e_batt - with_members,
                                         params.retail_price_micro_eur_per_kwh))
        elif e_batt < 0:
            with_members = min(-e_batt, short_wh)
            take = _take_in_priority(buys, np.where(short_ok, residual, 0), with_members)
            trades += _order_trades_from(buys, take, BATTERY_REF, p_star, Side.BUY)
            residual = residual - take
            if -e_batt > with_members:
                trades.append(OrderTrade(GRID_REF, BATTERY_REF, -e_batt - with_members,
                                         params.feed_in_price_micro_eur_per_kwh))

    to_grid = np.where(~book.is_buy & (price <= params.feed_in_price_micro_eur_per_kwh),
                       residual, 0)
    from_grid = np.where(book.is_buy & (price >= params.retail_price_micro_eur_per_kwh),
                         residual, 0)
    trades += _order_trades_from(sells, to_grid, GRID_REF,
                                 params.feed_in_price_micro_eur_per_kwh, Side.SELL)
    trades += _order_trades_from(buys, from_grid, GRID_REF,
                                 params.retail_price_micro_eur_per_kwh, Side.BUY)
    residual = residual - to_grid - from_grid

    result = IntervalClearing(
        interval=int(interval),
        params=params,
        book=book,
        local=local,
        orders_root=root,
        clearing_price_micro_eur_per_kwh=p_star,
        battery_account=None if battery is None else battery.account,
        battery=dispatched,
        order_trades=tuple(trades),
        trades=(),
        filled_wh=book.energy_wh - residual,
        excluded=excluded,
    )
    object.__setattr__(result, "trades", aggregate_trades(result))
    return result


def aggregate_trades(result: IntervalClearing) -> tuple[Trade, ...]:
    """Order-level trades summed per (buyer, seller, price), sorted by address and price.

    Self-trades (a member's buy against its own sell) are dropped.
    """
    sums: dict[tuple[str, str, int], int] = {}
    for t in result.order_trades:
        key = (result.party(t.buy), result.party(t.sell), t.price_micro_eur_per_kwh)
        sums[key] = sums.get(key, 0) + t.energy_wh
    rows = [Trade(b, s, e, p) for (b, s, p), e in sums.items() if e > 0 and b != s]
    return tuple(sorted(rows, key=lambda t: (t.buyer.lower(), t.seller.lower(),
                                             t.price_micro_eur_per_kwh)))
