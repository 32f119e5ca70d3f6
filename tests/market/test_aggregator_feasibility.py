"""Feasibility of every returned aggregator schedule, checked without the solver or the matrices.

The checker below re-derives every constraint of the H-ERM model from the case's raw data
(power balance per slot, storage dynamics, no simultaneous charge/discharge or buy/sell, every
bound, the DSO bands, the charging stations' energy needs) and applies it to hourly results,
look-ahead results, whole days and rolled days.
"""

from __future__ import annotations

import numpy as np
import pytest

from market.aggregator import ModelOptions, schedule_day, schedule_hour, synthetic_case
from market.aggregator.case import Case
from market.aggregator.rolling import roll_day

TOL_KW = 1e-5
TOL_KWH = 1e-5


def assert_feasible(case: Case, p: dict[str, np.ndarray], e: dict[str, np.ndarray],
                    slots: np.ndarray, load_kw: np.ndarray, res_kw: np.ndarray) -> None:
    """Raise AssertionError naming the first violated constraint of a schedule."""
    dt = case.slot_h
    scale = max(1.0, float(load_kw.sum(axis=0).max()))
    # bounds of every resource
    assert np.all(p["dg"] >= case.dg_p_min_kw[:, None] - TOL_KW), "DG below its minimum"
    assert np.all(p["dg"] <= case.dg_p_max_kw[:, None] + TOL_KW), "DG above its maximum"
    assert np.all(p["gcp"] >= -TOL_KW) and np.all(p["gcp"] <= res_kw + TOL_KW), "curtailment"
    np.testing.assert_allclose(p["res"] + p["gcp"], res_kw, atol=TOL_KW)
    assert np.all(p["supplier"] >= -TOL_KW), "negative supplier power"
    assert np.all(p["supplier"] <= case.supplier_p_max_kw + TOL_KW), "supplier over capacity"
    assert np.all(p["dr"] >= -TOL_KW), "negative demand response"
    assert np.all(p["dr"] <= case.dr_max_frac[:, None] * load_kw + TOL_KW), "DR over its share"
    assert np.all(p["nsd"] >= -TOL_KW), "negative non-supplied demand"
    assert np.all(p["dr"] + p["nsd"] <= load_kw + TOL_KW), "DR + NSD exceed the load"
    for key, cap in (("wm_buy", case.wm_buy_max_kw), ("wm_sell", case.wm_sell_max_kw),
                     ("lem_buy", case.lem_buy_max_kw), ("lem_sell", case.lem_sell_max_kw)):
        assert np.all(p[key] >= -TOL_KW) and np.all(p[key] <= cap + TOL_KW), f"{key} bound"
    for market in ("wm", "lem"):
        both = np.minimum(p[f"{market}_buy"], p[f"{market}_sell"])
        assert np.all(both <= TOL_KW), f"{market}: buying and selling in the same slot"
    for buy, sell in (("wm", "lem"), ("lem", "wm")):
        both = np.minimum(p[f"{buy}_buy"], p[f"{sell}_sell"])
        assert np.all(both <= TOL_KW), f"buying on {buy} while selling on {sell} in one slot"
    # power balance per slot (generation side = consumption side)
    supply = (p["dg"].sum(0) + p["res"].sum(0) + p["supplier"].sum(0) + p["dr"].sum(0)
              + p["nsd"].sum(0) + p["ess_dis"].sum(0) + p["cs_dis"].sum(0)
              + p["wm_buy"].sum(0) + p["lem_buy"].sum(0))
    demand = (load_kw.sum(0) + p["ess_ch"].sum(0) + p["cs_ch"].sum(0) + p["wm_sell"].sum(0)
              + p["lem_sell"].sum(0))
    np.testing.assert_allclose(supply, demand, atol=1e-7 * scale + TOL_KW,
                               err_msg="power balance violated")
    # storage units and charging stations
    for key in ("ess", "cs"):
        fleet = getattr(case, key)
        ch, dis, energy = p[f"{key}_ch"], p[f"{key}_dis"], e[key]
        assert np.all(ch >= -TOL_KW) and np.all(dis >= -TOL_KW), f"{key}: negative power"
        assert np.all(ch <= fleet.p_charge_max_kw[:, slots] + TOL_KW), f"{key}: charge limit"
        assert np.all(dis <= fleet.p_discharge_max_kw[:, slots] + TOL_KW), f"{key}: discharge"
        assert np.all(np.minimum(ch, dis) <= TOL_KW), f"{key}: charge and discharge at once"
        expected = (energy[:, :-1] + fleet.flow_kwh[:, slots] + fleet.eff_charge[:, None] * ch * dt
                    - dis * dt / fleet.eff_discharge[:, None])
        np.testing.assert_allclose(energy[:, 1:], expected, atol=TOL_KWH,
                                   err_msg=f"{key}: storage dynamics violated")
        assert np.all(energy[:, 1:] >= fleet.e_min_kwh[:, slots] - TOL_KWH), f"{key}: below min"
        assert np.all(energy[:, 1:] <= fleet.e_max_kwh[:, slots] + TOL_KWH), f"{key}: above max"
        lo, hi = getattr(case, f"{key}_band_p_min_kw"), getattr(case, f"{key}_band_p_max_kw")
        if lo is not None:
            net = ch - dis
            assert np.all(net >= lo[:, slots] - TOL_KW), f"{key}: below the DSO band"
            assert np.all(net <= hi[:, slots] + TOL_KW), f"{key}: above the DSO band"


def _check_result(case: Case, result) -> None:
    n = result.slots.size
    assert_feasible(case, result.p_kw, result.e_kwh, result.slots, result.load_kw,
                    result.res_kw)
    assert result.load_kw.shape[1] == n
    # binaries agree with the powers
    for key in ("ess", "cs"):
        on_ch = result.p_kw[f"{key}_ch"] > 1e-6
        on_dis = result.p_kw[f"{key}_dis"] > 1e-6
        assert np.all(result.binaries[f"{key}_x_ch"][on_ch] == 1)
        assert np.all(result.binaries[f"{key}_x_dis"][on_dis] == 1)
        assert np.all(result.binaries[f"{key}_x_ch"] + result.binaries[f"{key}_x_dis"] <= 1)


def banded(case: Case) -> Case:
    """DSO bands that bind: ESS may discharge at most 40% and charge 30% of rating, unit 0 must
    charge at least 50 kW in slots 8-11; CS charging limited to 90% of rating."""
    ess, cs = case.ess, case.cs
    ess_lo = -0.4 * ess.p_discharge_max_kw
    ess_hi = 0.3 * ess.p_charge_max_kw
    ess_lo = np.array(ess_lo)
    ess_lo[0, 8:12] = 50.0
    return case.with_bands(ess_p_min_kw=ess_lo, ess_p_max_kw=ess_hi,
                           cs_p_min_kw=-0.5 * cs.p_discharge_max_kw,
                           cs_p_max_kw=0.9 * cs.p_charge_max_kw)


@pytest.mark.parametrize("hour", [0, 7, 12, 19, 23])
def test_hour_schedules_are_feasible(hour: int) -> None:
    case = synthetic_case(0)
    _check_result(case, schedule_hour(case, hour))


@pytest.mark.parametrize("options", [
    ModelOptions(ess_cap_frac=0.10, cs_cap_frac=0.05),
    ModelOptions(lookahead_h=3),
    ModelOptions(storage_value="none"),
])
def test_hour_schedules_with_options_are_feasible(options: ModelOptions) -> None:
    case = synthetic_case(1).with_disturbance(demand_pct=15.0, res_pct=-10.0)
    for hour in (3, 18):
        _check_result(case, schedule_hour(case, hour, options))


def test_dso_bands_are_respected_and_bind() -> None:
    case = synthetic_case(0)
    free = roll_day(case)
    band_case = banded(case)
    day = roll_day(band_case)
    assert day.all_hours_optimal
    slots = np.arange(case.n_slots)
    assert_feasible(band_case, day.p_kw, day.e_kwh, slots, band_case.load_kw, band_case.res_kw)
    # the bands change the schedule: without them some unit leaves the band
    net_free = free.p_kw["ess_ch"] - free.p_kw["ess_dis"]
    assert np.any(net_free > band_case.ess_band_p_max_kw + 1.0) or np.any(
        net_free < band_case.ess_band_p_min_kw - 1.0)
    # the forced charging window is honoured
    assert np.all(day.p_kw["ess_ch"][0, 8:12] >= 50.0 - TOL_KW)


def test_whole_day_and_rolled_day_are_feasible() -> None:
    case = synthetic_case(2).with_disturbance(demand_pct=-20.0)
    slots = np.arange(case.n_slots)
    day = schedule_day(case)
    _check_result(case, day)
    rolled = roll_day(case, ModelOptions(ess_cap_frac=0.10, cs_cap_frac=0.05))
    assert_feasible(case, rolled.p_kw, rolled.e_kwh, slots, case.load_kw, case.res_kw)


def test_checker_detects_violations() -> None:
    """The checker is not vacuous: corrupting a schedule makes it fail."""
    case = synthetic_case(0)
    result = schedule_hour(case, 19)
    args = (result.slots, result.load_kw, result.res_kw)
    p = {k: np.array(v) for k, v in result.p_kw.items()}
    p["supplier"] = p["supplier"] + 10.0
    with pytest.raises(AssertionError, match="power balance"):
        assert_feasible(case, p, result.e_kwh, *args)
    p = {k: np.array(v) for k, v in result.p_kw.items()}
    e = {k: np.array(v) for k, v in result.e_kwh.items()}
    e["ess"][0, 2] += 5.0
    with pytest.raises(AssertionError, match="storage dynamics"):
        assert_feasible(case, p, e, *args)
    # charge and discharge 1 kW more at once where both limits leave room (balance unchanged)
    for hour in range(24):
        result = schedule_hour(case, hour)
        room = np.minimum(case.ess.p_charge_max_kw[:, result.slots] - result.p_kw["ess_ch"],
                          case.ess.p_discharge_max_kw[:, result.slots] - result.p_kw["ess_dis"])
        if room.max() > 1.0:
            break
    u, t = np.unravel_index(np.argmax(room), room.shape)
    p = {k: np.array(v) for k, v in result.p_kw.items()}
    p["ess_ch"][u, t] += 1.0
    p["ess_dis"][u, t] += 1.0
    with pytest.raises(AssertionError, match="at once"):
        assert_feasible(case, p, result.e_kwh, result.slots, result.load_kw, result.res_kw)
