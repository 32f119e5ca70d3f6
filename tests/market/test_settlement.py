"""Interval settlement (auction + battery + grid): the issue's properties on random books."""

from __future__ import annotations

import random

import pytest
from eth_utils import to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from market.battery import BatteryInfeasibleError, BatteryParams
from market.clearing import PriceRule
from market.orders import Side, book_entry, book_hash
from market.settlement import (
    BATTERY_ORDER_REF,
    GRID_ADDRESS,
    GRID_ORDER_REF,
    MAX_CLEARING_ENERGY_WH,
    MarketParams,
    Trade,
    UniformPriceError,
    clear_interval,
)

RETAIL, FEED_IN = 300_000, 80_000
BATTERY = to_checksum_address("0x" + "ba" * 20)
PARAMS = MarketParams(900, RETAIL, FEED_IN)
# mostly between the tariffs; also outside them (the contract's bounds may be wider)
PRICES = (st.integers(FEED_IN, RETAIL) | st.sampled_from([FEED_IN, RETAIL, 150_000, 200_000])
          | st.integers(0, 1_000_000))
ROWS = st.lists(
    st.tuples(st.integers(0, 9), st.sampled_from(list(Side)), st.integers(1, 8000), PRICES),
    max_size=30,
)


@st.composite
def battery_case(draw):
    cap = draw(st.integers(1000, 100_000))
    lo = draw(st.integers(0, cap // 2))
    hi = draw(st.integers(lo, cap))
    soc = draw(st.integers(lo, hi))
    params = BatteryParams(BATTERY, cap, lo, hi, soc, draw(st.integers(800_000, 1_000_000)),
                           draw(st.integers(800_000, 1_000_000)))
    p_min = draw(st.integers(-40_000, 5_000))
    p_max = draw(st.integers(max(p_min, -5_000), 40_000))
    return params, soc, (p_min, p_max)


def _flows(result):
    """Energy and money per party kind from the settlement trades."""
    member = lambda a: a not in (GRID_ADDRESS, BATTERY)  # noqa: E731
    f = dict.fromkeys(["bought", "sold", "charge", "discharge", "export", "import"], 0)
    balances: dict[str, int] = {}
    grid_paid = 0
    for t in result.trades:
        amount = t.energy_wh * t.price_micro_eur_per_kwh
        f["bought"] += t.energy_wh if member(t.buyer) else 0
        f["sold"] += t.energy_wh if member(t.seller) else 0
        f["charge"] += t.energy_wh if t.buyer == BATTERY else 0
        f["discharge"] += t.energy_wh if t.seller == BATTERY else 0
        f["export"] += t.energy_wh if t.buyer == GRID_ADDRESS else 0
        f["import"] += t.energy_wh if t.seller == GRID_ADDRESS else 0
        if t.buyer == GRID_ADDRESS:
            grid_paid += amount
        else:
            balances[t.buyer] = balances.get(t.buyer, 0) - amount
        if t.seller == GRID_ADDRESS:
            grid_paid -= amount
        else:
            balances[t.seller] = balances.get(t.seller, 0) + amount
    return f, balances, grid_paid


def _check_properties(result, params, soc, band):
    book = result.book
    f, balances, grid_paid = _flows(result)
    # energy balance
    assert f["bought"] + f["charge"] + f["export"] == f["sold"] + f["discharge"] + f["import"]
    # budget balance: members' and battery's money changes only by the grid's payments
    assert sum(balances.values()) == grid_paid
    # quantities within orders
    assert all(0 <= int(x) <= int(e) for x, e in zip(result.filled_wh, book.energy_wh,
                                                      strict=True))
    # individual rationality, order by order (local, battery and grid trades)
    for t in result.order_trades:
        if t.buy >= 0:
            assert t.price_micro_eur_per_kwh <= book.orders[t.buy].order.price_micro_eur_per_kwh
        if t.sell >= 0:
            assert t.price_micro_eur_per_kwh >= book.orders[t.sell].order.price_micro_eur_per_kwh
    # battery inside band and SoC; its traded energy matches its power as the contract checks
    d = result.battery
    assert band[0] <= d.power_w <= band[1]
    assert params.soc_min_wh <= d.soc_after_wh <= params.soc_max_wh
    assert f["charge"] - f["discharge"] == d.energy_wh
    assert abs(-d.energy_wh * 3600 + d.power_w * PARAMS.interval_s) <= 3600
    # the contract's price checks
    for t in result.trades:
        if t.seller == GRID_ADDRESS:
            assert t.price_micro_eur_per_kwh == RETAIL
        elif t.buyer == GRID_ADDRESS:
            assert t.price_micro_eur_per_kwh == FEED_IN
        else:
            assert t.price_micro_eur_per_kwh == result.clearing_price_micro_eur_per_kwh
        assert t.buyer != t.seller and t.energy_wh > 0
    # must-trade orders (buy at retail, sell at feed-in) are always filled
    for i, p in enumerate(book.orders):
        o = p.order
        if (o.side == Side.BUY and o.price_micro_eur_per_kwh >= RETAIL) or (
                o.side == Side.SELL and o.price_micro_eur_per_kwh <= FEED_IN):
            assert result.filled_wh[i] == o.energy_wh


@settings(max_examples=200, deadline=None)
@given(rows=ROWS, case=battery_case(), seed=st.integers(0, 2**32))
def test_settlement_properties(place, rows, case, seed):
    params, soc, band = case
    orders = place(rows)
    try:
        result = clear_interval(7, orders, PARAMS, params, soc, band)
    except BatteryInfeasibleError:
        lo, hi = band
        assert lo > 0 or hi < 0  # only a band excluding idle can be infeasible
        return
    _check_properties(result, params, soc, band)
    # determinism: a permuted book gives an identical settlement
    shuffled = orders[:]
    random.Random(seed).shuffle(shuffled)
    again = clear_interval(7, shuffled, PARAMS, params, soc, band)
    assert again.settle_args() == result.settle_args()
    assert again.battery == result.battery
    assert result.book_hash == book_hash(book_entry(p.order) for p in orders)
    _check_onchain_trades(result, orders)


def _check_onchain_trades(result, orders):
    """The order-level trades the contract gets: on the right sides, within each order's limit
    at the price the contract derives, fills within the orders' energies, and equal per party to
    the statements' trades."""
    _, price, _, book, trades = result.settle_args()
    assert book == [book_entry(p.order) for p in orders]
    fills = [0] * len(book)
    per_party: dict[tuple[str, str, int], int] = {}
    for buy, sell, energy in trades:
        tariff = (RETAIL if sell == GRID_ORDER_REF else FEED_IN if buy == GRID_ORDER_REF
                  else price)
        assert energy > 0 and buy != sell
        for ref, side in ((buy, Side.BUY), (sell, Side.SELL)):
            if ref < BATTERY_ORDER_REF:
                assert book[ref][1] == side
                assert (book[ref][3] >= tariff) if side == Side.BUY else (book[ref][3] <= tariff)
                fills[ref] += energy
        parties = tuple(book[r][0] if r < BATTERY_ORDER_REF else
                        GRID_ADDRESS if r == GRID_ORDER_REF else result.battery_account
                        for r in (buy, sell))
        per_party[(*parties, tariff)] = per_party.get((*parties, tariff), 0) + energy
    assert all(f <= b[2] for f, b in zip(fills, book, strict=True))
    assert fills == result.fills_wh()
    assert per_party == {(t.buyer, t.seller, t.price_micro_eur_per_kwh): t.energy_wh
                         for t in result.trades}


def test_battery_absorbs_surplus_then_grid_takes_must_sell(place):
    params = BatteryParams(BATTERY, 10_000, 1_000, 9_000, 5_000, 1_000_000, 1_000_000)
    orders = place([(0, Side.SELL, 3000, FEED_IN), (1, Side.BUY, 1000, 250_000)])
    r = clear_interval(7, orders, PARAMS, params, 5_000, (-4000, 4000))
    a0, a1 = orders[0].order.prosumer, orders[1].order.prosumer
    p = (250_000 + FEED_IN) // 2
    assert r.clearing_price_micro_eur_per_kwh == p
    assert r.battery.power_w == 4000 and r.battery.energy_wh == 1000
    assert set(r.trades) == {Trade(a1, a0, 1000, p), Trade(BATTERY, a0, 1000, p),
                             Trade(GRID_ADDRESS, a0, 1000, FEED_IN)}


def test_forced_charging_buys_from_the_grid(place):
    params = BatteryParams(BATTERY, 10_000, 0, 10_000, 5_000, 1_000_000, 1_000_000)
    r = clear_interval(7, place([]), PARAMS, params, 5_000, (2000, 3000))
    assert r.trades == (Trade(BATTERY, GRID_ADDRESS, 500, RETAIL),)
    assert r.settle_args()[1:3] == (PARAMS.reference_price_micro_eur_per_kwh, 2000)
    assert r.onchain_trades() == [(BATTERY_ORDER_REF, GRID_ORDER_REF, 500)]


def test_forced_discharging_sells_to_the_grid(place):
    params = BatteryParams(BATTERY, 10_000, 0, 10_000, 5_000, 1_000_000, 1_000_000)
    orders = place([(0, Side.BUY, 100, RETAIL)])
    r = clear_interval(7, orders, PARAMS, params, 5_000, (-3000, -2000))
    a0 = orders[0].order.prosumer
    ref = PARAMS.reference_price_micro_eur_per_kwh
    assert set(r.trades) == {Trade(a0, BATTERY, 100, ref), Trade(GRID_ADDRESS, BATTERY, 400,
                                                                  FEED_IN)}


def test_unfilled_orders_stay_unfilled_when_no_one_accepts_their_limit(place):
    orders = place([(0, Side.SELL, 1000, 250_000), (1, Side.BUY, 1000, 100_000)])
    r = clear_interval(7, orders, PARAMS)
    assert r.trades == () and list(r.filled_wh) == [0, 0]
    assert r.battery_power_w == 0


def test_self_trade_is_dropped(place):
    orders = place([(0, Side.SELL, 1000, 100_000), (0, Side.BUY, 600, 200_000),
                    (1, Side.BUY, 400, 200_000)])
    r = clear_interval(7, orders, PARAMS)
    a0, a1 = orders[0].order.prosumer, orders[2].order.prosumer
    assert r.trades == (Trade(a1, a0, 400, 150_000),)
    assert list(r.filled_wh) == [1000, 600, 400]
    assert r.onchain_trades() == [(2, 0, 400)]  # the 600 Wh against its own sell: not sent
    assert r.fills_wh() == [400, 0, 400]


def test_pay_as_bid_cannot_settle_on_chain(place):
    orders = place([(0, Side.BUY, 100, 300_000), (1, Side.BUY, 100, 200_000),
                    (2, Side.SELL, 200, 100_000)])
    r = clear_interval(7, orders, MarketParams(900, RETAIL, FEED_IN, PriceRule.PAY_AS_BID))
    assert {t.price_micro_eur_per_kwh for t in r.trades} == {300_000, 200_000}
    with pytest.raises(UniformPriceError, match="uniform price"):
        r.settle_args()
    # even one local price differs from the uniform price the battery trades at
    one_buyer = clear_interval(7, orders[1:], MarketParams(900, RETAIL, FEED_IN, "pay-as-bid"))
    assert one_buyer.clearing_price_micro_eur_per_kwh == 150_000
    with pytest.raises(UniformPriceError, match=r"\[200000\]"):
        one_buyer.settle_args()


def test_oversized_orders_are_excluded_but_committed(place):
    orders = place([(0, Side.SELL, MAX_CLEARING_ENERGY_WH + 1, 100_000),
                    (1, Side.BUY, 100, 200_000)])
    r = clear_interval(7, orders, PARAMS)
    assert r.excluded == (orders[0],)
    assert r.trades == ()
    assert r.book_hash == book_hash(book_entry(p.order) for p in orders)
    assert len(r.settle_args()[3]) == 2  # both orders stay in the book the contract checks


def test_orders_of_inactive_prosumers_are_excluded_but_committed(place):
    orders = place([(0, Side.SELL, 100, FEED_IN), (1, Side.BUY, 100, RETAIL),
                    (2, Side.SELL, 100, FEED_IN)])
    gone = orders[0].order.prosumer
    r = clear_interval(7, orders, PARAMS, inactive={gone.lower()})
    assert r.excluded == (orders[0],)
    assert r.trades == (Trade(orders[1].order.prosumer, orders[2].order.prosumer, 100,
                              (RETAIL + FEED_IN) // 2),)
    assert r.book_hash == book_hash(book_entry(p.order) for p in orders)
    assert r.onchain_trades() == [(1, 2, 100)]  # indices of the whole book, excluded included


def test_input_errors(place):
    params = BatteryParams(BATTERY, 10_000, 0, 10_000, 5_000)
    with pytest.raises(ValueError, match="needs its SoC"):
        clear_interval(7, place([]), PARAMS, params)
    with pytest.raises(ValueError, match="feed-in"):
        MarketParams(900, 100, 200)
    with pytest.raises(ValueError, match="interval length"):
        MarketParams(0, 200, 100)
    with pytest.raises(ValueError, match="interval 7, not 8"):
        clear_interval(8, place([(0, Side.BUY, 1, RETAIL)]), PARAMS)


def test_trade_tuple_roundtrip():
    t = Trade(BATTERY.lower(), GRID_ADDRESS, 5, 7)
    back = Trade.from_tuple(t.as_tuple())
    assert back.as_tuple() == (BATTERY, GRID_ADDRESS, 5, 7)
    assert Trade.from_tuple({"buyer": BATTERY, "seller": GRID_ADDRESS, "energyWh": 5,
                             "priceMicroEurPerKwh": 7}) == Trade.from_tuple(back.as_tuple())
