"""The worked example of docs/market.md: one quarter hour, ten prosumers, checked by hand.

Every expected number below is derived in docs/market.md, section "Worked example".
"""

from __future__ import annotations

import pytest
from eth_utils import to_checksum_address

from market.battery import BatteryParams
from market.orders import Side
from market.settlement import (
    BATTERY_ORDER_REF,
    GRID_ADDRESS,
    GRID_ORDER_REF,
    MarketParams,
    Trade,
    clear_interval,
)
from market.statements import member_statement

BATTERY = to_checksum_address("0x" + "ba" * 20)
PARAMS = MarketParams(interval_s=900, retail_price_micro_eur_per_kwh=300_000,
                      feed_in_price_micro_eur_per_kwh=80_000)
BAND_W = (-8000, 2000)
SOC_WH = 10_000

# (prosumer index, side, energy Wh, limit micro-EUR/kWh); placed in this order. P1..P10 = 0..9.
EXAMPLE_ROWS = [
    (0, Side.SELL, 2000, 80_000),
    (1, Side.SELL, 2500, 80_000),
    (2, Side.SELL, 1000, 110_000),
    (3, Side.SELL, 800, 160_000),
    (4, Side.SELL, 500, 240_000),
    (5, Side.BUY, 1200, 300_000),
    (6, Side.BUY, 900, 250_000),
    (7, Side.BUY, 700, 200_000),
    (8, Side.BUY, 400, 150_000),
    (9, Side.BUY, 500, 120_000),
]


def example_battery(accounts) -> BatteryParams:
    return BatteryParams(
        account=BATTERY, capacity_wh=20_000, soc_min_wh=2_000, soc_max_wh=18_000,
        initial_soc_wh=SOC_WH, charge_efficiency_ppm=950_000, discharge_efficiency_ppm=950_000,
        shares_bps={accounts[0].address: 5000, accounts[5].address: 3000,
                    accounts[6].address: 2000},
    )


@pytest.fixture
def example(place, accounts):
    return clear_interval(7, place(EXAMPLE_ROWS), PARAMS, example_battery(accounts), SOC_WH,
                          BAND_W)


def test_worked_example_clearing(example, accounts):
    P = [a.address for a in accounts]
    assert example.clearing_price_micro_eur_per_kwh == 100_000  # (120000 + 80000) / 2
    assert example.local.matched_energy_wh == 3700
    assert example.battery.power_w == 2000  # wanted 800 Wh = 3200 W, band caps at 2000 W
    assert example.battery.energy_wh == 500
    assert example.battery.soc_after_wh == 10_475  # 10000 + floor(500 * 0.95)
    assert set(example.trades) == {
        Trade(P[5], P[0], 1200, 100_000),
        Trade(P[6], P[0], 800, 100_000),
        Trade(P[6], P[1], 100, 100_000),
        Trade(P[7], P[1], 700, 100_000),
        Trade(P[8], P[1], 400, 100_000),
        Trade(P[9], P[1], 500, 100_000),
        Trade(BATTERY, P[1], 500, 100_000),
        Trade(GRID_ADDRESS, P[1], 300, 80_000),
    }
    assert list(example.filled_wh) == [2000, 2500, 0, 0, 0, 1200, 900, 700, 400, 500]
    interval, price, power, book, trades = example.settle_args()
    assert (interval, price, power, len(book)) == (7, 100_000, 2000, 10)
    # book indices: P1..P5 sell (0..4), P6..P10 buy (5..9); battery and grid by reference
    assert trades == [(5, 0, 1200), (6, 0, 800), (6, 1, 100), (7, 1, 700), (8, 1, 400),
                      (9, 1, 500), (BATTERY_ORDER_REF, 1, 500), (GRID_ORDER_REF, 1, 300)]


def test_worked_example_statements(example, accounts):
    P = [a.address for a in accounts]
    settled = [(7, example.trades)]
    shares = example_battery(accounts).shares_bps
    p2 = member_statement(P[1], settled, BATTERY, shares)
    assert (p2.sold_local_wh, p2.to_battery_wh, p2.to_grid_wh) == (1700, 500, 300)
    assert p2.net_nano_eur == 244_000_000  # 0.17 + 0.05 + 0.024 EUR
    p6 = member_statement(P[5], settled, BATTERY, shares)
    assert (p6.bought_local_wh, p6.net_nano_eur) == (1200, -120_000_000)
    assert (p6.battery_share_bps, p6.battery_share_charge_wh) == (3000, 150)
    assert p6.battery_share_net_nano_eur == -15_000_000  # 30 % of -0.05 EUR
    p3 = member_statement(P[2], settled, BATTERY, shares)
    assert p3.net_nano_eur == 0 and p3.sold_local_wh == 0
    nets = [member_statement(a, settled, BATTERY, shares).net_nano_eur for a in P]
    battery_net = -500 * 100_000
    assert sum(nets) + battery_net == 300 * 80_000  # only the grid's payment is left
    text = p2.format_text()
    assert "to grid" in text and "+0.2440 EUR" in text


def test_statement_refuses_battery_and_grid(accounts):
    with pytest.raises(ValueError, match="not a member"):
        member_statement(BATTERY, [], BATTERY)
    with pytest.raises(ValueError, match="not a member"):
        member_statement(GRID_ADDRESS, [], BATTERY)
    empty = member_statement(accounts[0].address, [], BATTERY)
    assert empty.net_nano_eur == 0 and "none settled" in empty.format_text()
