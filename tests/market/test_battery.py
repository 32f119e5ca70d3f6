"""Community battery: power/energy rounding the contract accepts, SoC limits, band, shares."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from capacity.storage import energy_for_power, max_power_for_energy
from market.battery import (
    BatteryInfeasibleError,
    BatteryParams,
    dispatch,
    power_for_residual,
    soc_power_range,
    split_by_shares,
)

ACCOUNT = "0x" + "ba" * 20
INTERVALS_S = st.sampled_from([60, 300, 900, 1800, 3600, 7200, 86400]) | st.integers(1, 100_000)


def _params(**over) -> BatteryParams:
    base = dict(account=ACCOUNT, capacity_wh=50_000, soc_min_wh=5_000, soc_max_wh=45_000,
                initial_soc_wh=20_000, charge_efficiency_ppm=950_000,
                discharge_efficiency_ppm=900_000)
    base.update(over)
    return BatteryParams(**base)


@st.composite
def battery_params(draw) -> BatteryParams:
    cap = draw(st.integers(1, 10**8))
    lo = draw(st.integers(0, cap))
    hi = draw(st.integers(lo, cap))
    return BatteryParams(ACCOUNT, cap, lo, hi, draw(st.integers(lo, hi)),
                         draw(st.integers(1, 10**6)), draw(st.integers(1, 10**6)))


def _contract_accepts(energy_wh: int, power_w: int, interval_s: int) -> bool:
    """GridMarket.settle: |netSold*3600 + P*T| <= 3600 with netSold = -energy."""
    return abs(-energy_wh * 3600 + power_w * interval_s) <= 3600


@settings(max_examples=300, deadline=None)
@given(power_w=st.integers(-(2**62), 2**62), interval_s=INTERVALS_S)
def test_energy_for_power_always_passes_the_contract_check(power_w, interval_s):
    e = energy_for_power(power_w, interval_s)
    assert abs(e * 3600 - power_w * interval_s) <= 1800  # within half a Wh
    assert _contract_accepts(e, power_w, interval_s)
    assert energy_for_power(-power_w, interval_s) == -e


@settings(max_examples=200, deadline=None)
@given(energy_wh=st.integers(0, 10**12), interval_s=INTERVALS_S)
def test_max_power_for_energy_is_tight(energy_wh, interval_s):
    p = max_power_for_energy(energy_wh, interval_s)
    assert energy_for_power(p, interval_s) <= energy_wh < energy_for_power(p + 1, interval_s)


@settings(max_examples=200, deadline=None)
@given(residual_wh=st.integers(-(10**9), 10**9), interval_s=INTERVALS_S)
def test_power_for_residual_takes_no_more_than_the_residual(residual_wh, interval_s):
    p = power_for_residual(residual_wh, interval_s)
    e = energy_for_power(p, interval_s)
    assert abs(e) <= abs(residual_wh)
    assert e * residual_wh >= 0
    # the next power away from zero would overshoot, or the residual is exactly met
    step = 1 if residual_wh >= 0 else -1
    assert e == residual_wh or abs(energy_for_power(p + step, interval_s)) > abs(residual_wh)


def test_power_for_residual_on_a_quarter_hour_is_exact():
    assert power_for_residual(1234, 900) == 4936
    assert energy_for_power(4936, 900) == 1234
    assert power_for_residual(-1234, 900) == -4936


@settings(max_examples=200, deadline=None)
@given(params=battery_params(), data=st.data())
def test_soc_limits_are_tight(params, data):
    soc = data.draw(st.integers(params.soc_min_wh, params.soc_max_wh))
    c, d = params.max_charge_wh(soc), params.max_discharge_wh(soc)
    assert params.soc_after(soc, c) <= params.soc_max_wh < params.soc_after(soc, c + 1)
    assert params.soc_after(soc, -d) >= params.soc_min_wh > params.soc_after(soc, -d - 1)


@settings(max_examples=300, deadline=None)
@given(params=battery_params(), interval_s=INTERVALS_S, data=st.data())
def test_dispatch_inside_band_and_soc(params, interval_s, data):
    soc = data.draw(st.integers(params.soc_min_wh, params.soc_max_wh))
    p_min = data.draw(st.integers(-(10**7), 10**7))
    p_max = data.draw(st.integers(p_min, 10**7))
    residual = data.draw(st.integers(-(10**8), 10**8))
    lo_soc, hi_soc = soc_power_range(params, soc, interval_s)
    if max(p_min, lo_soc) > min(p_max, hi_soc):
        with pytest.raises(BatteryInfeasibleError, match="no battery power fits"):
            dispatch(params, soc, (p_min, p_max), residual, interval_s)
        return
    d = dispatch(params, soc, (p_min, p_max), residual, interval_s)
    assert p_min <= d.power_w <= p_max
    assert params.soc_min_wh <= d.soc_after_wh <= params.soc_max_wh
    assert d.energy_wh == energy_for_power(d.power_w, interval_s)
    assert _contract_accepts(d.energy_wh, d.power_w, interval_s)
    assert d.soc_after_wh == params.soc_after(soc, d.energy_wh)
    # a forced discharge is met with exactly its least discharge; else the battery takes the
    # residual when the band and SoC allow it
    wanted = d.feasible_max_w if p_max < 0 else power_for_residual(residual, interval_s)
    if d.feasible_min_w <= wanted <= d.feasible_max_w:
        assert d.power_w == wanted


@settings(max_examples=300, deadline=None)
@given(params=battery_params(), interval_s=INTERVALS_S, data=st.data())
def test_dispatch_keeps_the_reserve_unless_the_band_forces_more(params, interval_s, data):
    soc = data.draw(st.integers(params.soc_min_wh, params.soc_max_wh))
    reserve = data.draw(st.integers(0, 2**64 - 1))
    p_min = data.draw(st.integers(-(10**7), 10**7))
    p_max = data.draw(st.integers(p_min, 10**7))
    residual = data.draw(st.integers(-(10**8), 10**8))
    try:
        free = dispatch(params, soc, (p_min, p_max), residual, interval_s)
    except BatteryInfeasibleError:
        return
    kept = dispatch(params, soc, (p_min, p_max), residual, interval_s, reserve)
    assert free.feasible_min_w <= kept.power_w <= free.feasible_max_w
    keep_w = params.storage.power_range_w(soc, interval_s, floor_wh=reserve)[0]
    assert kept.power_w >= min(keep_w, kept.feasible_max_w)  # no sale below the reserve
    if free.power_w >= keep_w:
        assert kept.power_w == free.power_w  # the reserve changes only what went below it


def test_dispatch_examples():
    params = _params()
    # 1 kWh surplus on a quarter hour: 4 kW, band allows it
    d = dispatch(params, 20_000, (-10_000, 10_000), 1000, 900)
    assert (d.power_w, d.energy_wh, d.soc_after_wh) == (4000, 1000, 20_950)
    # band caps charging at 2 kW -> 500 Wh
    d = dispatch(params, 20_000, (-10_000, 2_000), 1000, 900)
    assert (d.power_w, d.energy_wh) == (2000, 500)
    # discharge 900 Wh AC draws 1000 Wh from the cells at 90 %
    d = dispatch(params, 20_000, (-10_000, 10_000), -900, 900)
    assert (d.power_w, d.energy_wh, d.soc_after_wh) == (-3600, -900, 19_000)
    # band forces charging although there is no residual
    d = dispatch(params, 20_000, (1_000, 10_000), 0, 900)
    assert (d.power_w, d.energy_wh) == (1000, 250)
    # a band forcing a discharge: exactly the least it forces, whatever the shortfall
    d = dispatch(params, 20_000, (-10_000, -2_000), -2_000, 900)
    assert (d.power_w, d.energy_wh) == (-2000, -500)
    d = dispatch(params, 20_000, (-10_000, -2_000), 3_000, 900)
    assert d.power_w == -2000
    # the reserve: 20 kWh charged, 19 kWh reserve: 900 Wh AC may go (1000 Wh cells at 90 %)
    d = dispatch(params, 20_000, (-10_000, 10_000), -5_000, 900, 19_000)
    assert (d.energy_wh, d.soc_after_wh) == (-900, 19_000)
    d = dispatch(params, 20_000, (-10_000, 10_000), -5_000, 900, 25_000)  # below it: none
    assert (d.energy_wh, d.soc_after_wh) == (0, 20_000)
    d = dispatch(params, 20_000, (-10_000, -2_000), 0, 900, 25_000)  # the band forces more
    assert d.power_w == -2_000
    d = dispatch(params, 20_000, (1_000, 10_000), -5_000, 900, 25_000)  # no sale, forced charge
    assert d.power_w == 1_000
    # a zero band means idle
    d = dispatch(params, 20_000, (0, 0), 5000, 900)
    assert (d.power_w, d.energy_wh, d.soc_after_wh) == (0, 0, 20_000)


def test_band_that_allows_no_action_is_a_clear_error():
    full = _params(initial_soc_wh=45_000)
    with pytest.raises(BatteryInfeasibleError, match=r"band \[1000, 2000\] W"):
        dispatch(full, 45_000, (1000, 2000), 0, 900)
    with pytest.raises(ValueError, match="P_min 5 W > P_max 4 W"):
        dispatch(full, 45_000, (5, 4), 0, 900)
    with pytest.raises(ValueError, match="SoC 1 Wh outside"):
        dispatch(full, 1, (0, 0), 0, 900)
    with pytest.raises(ValueError, match="interval length"):
        dispatch(full, 45_000, (0, 0), 0, 0)


@pytest.mark.parametrize(
    ("over", "match"),
    [({"capacity_wh": 0}, "capacity"), ({"soc_max_wh": 60_000}, "soc_min_wh"),
     ({"initial_soc_wh": 1}, "initial SoC"), ({"charge_efficiency_ppm": 0}, "charge_eff"),
     ({"discharge_efficiency_ppm": 1_000_001}, "discharge_eff"),
     ({"shares_bps": {"0x" + "01" * 20: 6000, "0x" + "02" * 20: 4001}}, "shares")],
)
def test_params_errors(over, match):
    with pytest.raises(ValueError, match=match):
        _params(**over)


def test_params_dict_roundtrip_and_unknown_field():
    params = _params(shares_bps={"0x" + "01" * 20: 2500})
    assert BatteryParams.from_dict(params.to_dict()) == params
    with pytest.raises(ValueError, match="unknown battery fields"):
        BatteryParams.from_dict({**params.to_dict(), "colour": "red"})


@settings(max_examples=200, deadline=None)
@given(amount=st.integers(-(10**15), 10**15),
       shares=st.lists(st.integers(0, 2500), min_size=0, max_size=4))
def test_split_by_shares_never_overpays(amount, shares):
    owners = {"0x" + f"{i + 1:02x}" * 20: bps for i, bps in enumerate(shares)}
    assume(sum(owners.values()) <= 10_000)
    parts = split_by_shares(amount, owners)
    for owner, bps in owners.items():
        exact = amount * bps / 10_000
        assert abs(parts[owner]) <= abs(exact) < abs(parts[owner]) + 1
    assert abs(sum(parts.values())) <= abs(amount)
