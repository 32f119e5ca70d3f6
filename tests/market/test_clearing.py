"""The local double auction against a plain-loop reference, and its defining properties."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market.clearing import OrderBook, PriceRule, clear_book
from market.orders import PlacedOrder, Side

REF = 190_000
PRICES = st.integers(80_000, 300_000) | st.sampled_from([100_000, 150_000, 200_000, 250_000])
ROWS = st.lists(
    st.tuples(st.integers(0, 9), st.sampled_from(list(Side)), st.integers(1, 5000), PRICES),
    max_size=40,
)


def _book(orders: list[PlacedOrder]) -> OrderBook:
    return OrderBook.from_orders(7, orders)


def _reference(orders: list[PlacedOrder]):
    """Plain-loop uniform-price auction with the documented priorities and price rule."""
    buys = sorted((p for p in orders if p.order.side == Side.BUY),
                  key=lambda p: (-p.order.price_micro_eur_per_kwh, p.placed_seq, p.digest))
    sells = sorted((p for p in orders if p.order.side == Side.SELL),
                   key=lambda p: (p.order.price_micro_eur_per_kwh, p.placed_seq, p.digest))
    left = {p.digest: p.order.energy_wh for p in orders}
    trades, i, j, last = [], 0, 0, None
    while i < len(buys) and j < len(sells):
        b, s = buys[i], sells[j]
        if b.order.price_micro_eur_per_kwh < s.order.price_micro_eur_per_kwh:
            break
        q = min(left[b.digest], left[s.digest])
        trades.append((b.digest, s.digest, q))
        left[b.digest] -= q
        left[s.digest] -= q
        last = (b.order.price_micro_eur_per_kwh, s.order.price_micro_eur_per_kwh)
        i += left[b.digest] == 0
        j += left[s.digest] == 0
    price = REF if last is None else (last[0] + last[1]) // 2
    return trades, price


def _trades_by_digest(orders, local):
    return [(orders[b].digest, orders[s].digest, int(e))
            for b, s, e in zip(local.trade_buy, local.trade_sell, local.trade_energy_wh,
                               strict=True)]


@settings(max_examples=150, deadline=None)
@given(rows=ROWS)
def test_matches_plain_loop_reference(place, rows):
    orders = place(rows)
    local = clear_book(_book(orders), REF)
    trades, price = _reference(orders)
    assert _trades_by_digest(orders, local) == trades
    assert local.clearing_price_micro_eur_per_kwh == price
    assert local.matched == bool(trades)


@settings(max_examples=150, deadline=None)
@given(rows=ROWS, seed=st.integers(0, 2**32))
def test_properties(place, rows, seed):
    orders = place(rows)
    book = _book(orders)
    local = clear_book(book, REF)
    price = book.price_micro_eur_per_kwh
    p_star = local.clearing_price_micro_eur_per_kwh
    # quantities within orders, and both sides of every trade filled equally
    assert np.all(local.filled_wh <= book.energy_wh)
    assert local.filled_wh[book.is_buy].sum() == local.filled_wh[~book.is_buy].sum()
    # individual rationality at the uniform price
    assert np.all(price[local.trade_buy] >= p_star)
    assert np.all(price[local.trade_sell] <= p_star)
    # efficiency: no crossing pair is left unfilled
    left = book.energy_wh - local.filled_wh
    open_buys = price[book.is_buy & (left > 0)]
    open_sells = price[~book.is_buy & (left > 0)]
    if open_buys.size and open_sells.size:
        assert open_buys.max() < open_sells.min()
    # determinism: a permuted book gives the same trades by digest and the same price
    shuffled = orders[:]
    random.Random(seed).shuffle(shuffled)
    local2 = clear_book(_book(shuffled), REF)
    assert _trades_by_digest(shuffled, local2) == _trades_by_digest(orders, local)
    assert local2.clearing_price_micro_eur_per_kwh == p_star


def test_price_is_midpoint_of_marginal_pair(place):
    orders = place([(0, Side.BUY, 1000, 300_000), (1, Side.BUY, 1000, 200_000),
                    (2, Side.SELL, 1500, 100_000), (3, Side.SELL, 1000, 250_000)])
    local = clear_book(_book(orders), REF)
    # buyer 300k takes 1000 of seller 100k, buyer 200k takes 500 more; 200k < 250k stops.
    assert _trades_by_digest(orders, local) == [
        (orders[0].digest, orders[2].digest, 1000), (orders[1].digest, orders[2].digest, 500)]
    assert local.clearing_price_micro_eur_per_kwh == (200_000 + 100_000) // 2
    assert local.matched_energy_wh == 1500


def test_tie_breaking_time_then_digest(place):
    orders = place([(0, Side.SELL, 500, 100_000), (1, Side.SELL, 500, 100_000),
                    (2, Side.BUY, 500, 200_000)])
    local = clear_book(_book(orders), REF)
    assert list(local.trade_sell) == [0]  # same price: earlier placement wins
    same_time = [PlacedOrder(p.order, p.digest, 0) for p in orders]
    local = clear_book(_book(same_time), REF)
    winner = min((0, 1), key=lambda i: orders[i].digest)
    assert list(local.trade_sell) == [winner]  # same price and time: lower digest wins


def test_pay_as_bid_prices_each_trade_at_its_buyer_limit(place):
    orders = place([(0, Side.BUY, 1000, 300_000), (1, Side.BUY, 1000, 200_000),
                    (2, Side.SELL, 2000, 100_000)])
    local = clear_book(_book(orders), REF, PriceRule.PAY_AS_BID)
    assert list(local.trade_price_micro_eur_per_kwh) == [300_000, 200_000]
    assert local.clearing_price_micro_eur_per_kwh == 150_000


@pytest.mark.parametrize(
    "rows",
    [[], [(0, Side.BUY, 100, 200_000)], [(0, Side.SELL, 100, 200_000)],
     [(0, Side.BUY, 100, 100_000), (1, Side.SELL, 100, 200_000)]],
)
def test_no_cross_uses_reference_price(place, rows):
    local = clear_book(_book(place(rows)), REF)
    assert not local.matched
    assert local.clearing_price_micro_eur_per_kwh == REF
    assert local.matched_energy_wh == 0


def test_book_errors(place):
    orders = place([(0, Side.BUY, 100, 200_000)])
    with pytest.raises(ValueError, match="interval 7, not 8"):
        OrderBook.from_orders(8, orders)
    with pytest.raises(ValueError, match="duplicate"):
        OrderBook.from_orders(7, orders + orders)
    with pytest.raises(ValueError, match="not a valid PriceRule"):
        clear_book(_book(orders), REF, "pay-as-you-wish")
