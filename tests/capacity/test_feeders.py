"""Built-in feeders: registry, conversion to Feeder, profiles in bus order, and the voltage
properties each feeder was calibrated for, checked with pandapower's Newton-Raphson."""

from __future__ import annotations

import warnings
from functools import cache

import numpy as np
import pandapower as pp
import pytest

from capacity.feeders import (
    FEEDER_NAMES,
    apply_minute,
    day_profiles,
    feeder_case,
    heimschuh,
    load_feeder,
    load_pandapower_net,
)
from capacity.flexibility import FlexibilityKind
from capacity.grid import Feeder

V_LOW, V_HIGH = 0.95, 1.05
_cached_feeder = cache(load_feeder)  # read-only use in the HELM screens below


def _runpp(net: pp.pandapowerNet) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runpp(net, numba=False)
    return net.res_bus.vm_pu.to_numpy()


def _minute(hh: int, mm: int = 0) -> int:
    return 60 * hh + mm


def test_names() -> None:
    assert set(FEEDER_NAMES) == {"paper-test-feeder", "heimschuh-like", "cigre-lv"}


@pytest.mark.parametrize("bad", ["nope", "", "CIGRE-LV", None])
def test_unknown_feeder_name_lists_the_known_names(bad: object) -> None:
    for fn in (load_feeder, load_pandapower_net, feeder_case, day_profiles):
        with pytest.raises(ValueError, match="known feeders: paper-test-feeder, heimschuh-like"):
            fn(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", FEEDER_NAMES)
def test_builtin_converts_to_feeder_in_net_bus_order(name: str) -> None:
    feeder = load_feeder(name)
    net = load_pandapower_net(name)
    assert isinstance(feeder, Feeder)
    np.testing.assert_array_equal(feeder.bus_ids, net.bus.index.to_numpy())
    case = feeder_case(name)
    assert net.ext_grid.vm_pu.tolist() == [case.v_slack_pu]
    buses = set(net.bus.index)
    assert all(f.bus_id in buses for f in case.flexibilities)
    assert all(c.bus_id in buses for c in case.customers)
    # base case: customers at their annual mean (paper/heimschuh) or CIGRE peak, PV and flex 0
    assert np.all(net.sgen.p_mw == 0.0)
    flex_names = {f.name for f in case.flexibilities}
    assert np.all(net.load.loc[net.load.name.isin(flex_names), "p_mw"] == 0.0)
    assert feeder.p_kw.sum() == pytest.approx(net.load.p_mw.sum() * 1000.0)


def test_nets_are_fresh_copies() -> None:
    a = load_pandapower_net("paper-test-feeder")
    a.load.loc[:, "p_mw"] = 1.0
    b = load_pandapower_net("paper-test-feeder")
    assert b.load.p_mw.max() < 1.0


@pytest.mark.parametrize("name", FEEDER_NAMES)
def test_day_profiles_follow_feeder_bus_order(name: str) -> None:
    feeder = load_feeder(name)
    d = day_profiles(name, seed=5)
    assert d.p_kw.shape == d.q_kvar.shape == (1440, len(feeder.bus_ids))
    np.testing.assert_array_equal(d.bus_ids, feeder.bus_ids)
    np.testing.assert_array_equal(d.p_kw, day_profiles(name, seed=5).p_kw)
    # writing one minute into the net and importing it gives the profile's bus vector
    net = load_pandapower_net(name)
    apply_minute(net, d, _minute(12, 30))
    imported = Feeder.from_pandapower(net)
    np.testing.assert_allclose(imported.p_kw, d.p_kw[_minute(12, 30)], atol=1e-9)
    np.testing.assert_allclose(imported.q_kvar, d.q_kvar[_minute(12, 30)], atol=1e-9)


def test_apply_minute_sets_flexibilities_and_rejects_bad_input() -> None:
    net = load_pandapower_net("heimschuh-like")
    d = day_profiles("heimschuh-like")
    apply_minute(net, d, 600, {"CB": -30.0, "CS02": 11.0})
    by_name = net.load.set_index("name").p_mw
    assert by_name["CB"] == pytest.approx(-0.030) and by_name["CS02"] == pytest.approx(0.011)
    with pytest.raises(ValueError, match="minute 1440"):
        apply_minute(net, d, 1440)
    with pytest.raises(ValueError, match="'CS09'"):
        apply_minute(net, d, 0, {"CS09": 1.0})
    with pytest.raises(ValueError, match="no load named 'UL01'"):
        apply_minute(net, day_profiles("paper-test-feeder"), 0)


# --- paper-test-feeder: the OCM paper's Fig. 6 / Fig. 7 ------------------------------------


def test_paper_feeder_topology_matches_fig6() -> None:
    net = load_pandapower_net("paper-test-feeder")
    case = feeder_case("paper-test-feeder")
    assert len(net.bus) == 5 and len(net.line) == 4 and case.v_slack_pu == 1.0
    # one branch: bus i -- bus i+1
    assert list(zip(net.line.from_bus, net.line.to_bus, strict=True)) == [
        (0, 1),
        (1, 2),
        (2, 3),
        (3, 4),
    ]
    at = {c.name: c.bus_id for c in case.customers} | {f.name: f.bus_id for f in case.flexibilities}
    assert at["UL01"] < at["CS01"] < at["CS02"] < at["UL02"]  # order along the line
    assert all(f.kind is FlexibilityKind.CHARGING_STATION for f in case.flexibilities)
    assert all((f.p_low_kw, f.p_high_kw) == (0.0, 22.0) for f in case.flexibilities)
    assert len(net.sgen) == 0  # only loads, as in the paper


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paper_feeder_ul01_peak_breaks_the_limit_and_day_bands_bind(seed: int) -> None:
    net = load_pandapower_net("paper-test-feeder")
    d = day_profiles("paper-test-feeder", seed=seed)
    ul01 = d.load_kw[:, [c.name for c in d.customers].index("UL01")]
    evening = np.arange(_minute(17), _minute(22))
    peak = int(evening[np.argmax(ul01[evening])])
    # evening peak, stations off: under-voltage at the far end (Fig. 7 highlighted region) ...
    v = _runpp(apply_minute(net, d, peak, {"CS01": 0.0, "CS02": 0.0}))
    assert v.min() < V_LOW and int(np.argmin(v)) == 4
    # ... caused by UL01 alone: still below 0.95 with UL02 switched off
    net.load.loc[net.load.name == "UL02", ["p_mw", "q_mvar"]] = 0.0
    assert _runpp(net).min() < V_LOW
    # daytime: the stations' bands bind at 0.95 pu (off: fine; both at 22 kW: violation)
    for minute in range(_minute(10), _minute(16), 45):
        assert _runpp(apply_minute(net, d, minute, {"CS01": 0.0, "CS02": 0.0})).min() > V_LOW
        assert _runpp(apply_minute(net, d, minute, {"CS01": 22.0, "CS02": 22.0})).min() < V_LOW


def test_paper_feeder_nearer_station_has_more_headroom() -> None:
    net = load_pandapower_net("paper-test-feeder")
    d = day_profiles("paper-test-feeder")
    noon = _minute(12)
    v_cs01 = _runpp(apply_minute(net, d, noon, {"CS01": 22.0, "CS02": 0.0})).min()
    v_cs02 = _runpp(apply_minute(net, d, noon, {"CS01": 0.0, "CS02": 22.0})).min()
    assert v_cs01 > v_cs02


# --- heimschuh-like: the paper's section 4 situation -----------------------------------------


def test_heimschuh_like_composition() -> None:
    case = feeder_case("heimschuh-like")
    net = load_pandapower_net("heimschuh-like")
    assert 20 <= len(net.bus) <= 40
    assert len(case.customers) == 21
    assert sum(c.pv_kwp for c in case.customers) == pytest.approx(200.0, abs=10.0)
    assert case.v_slack_pu == 1.01
    kinds = sorted(f.kind.value for f in case.flexibilities)
    assert kinds == ["charging_station", "charging_station", "community_battery"]
    cb = next(f for f in case.flexibilities if f.kind is FlexibilityKind.COMMUNITY_BATTERY)
    assert (cb.p_low_kw, cb.p_high_kw) == (-50.0, 50.0)
    assert case.storage_energy_kwh == {"CB": 100.0}
    assert "SYNTHETIC" in (heimschuh.__doc__ or "")
    assert len(net.trafo) == 1 and net.trafo.std_type.iloc[0] == "0.25 MVA 20/0.4 kV"


def _helm_v_pu(name: str, d, flex_p_kw: dict[str, float], minutes: np.ndarray) -> np.ndarray:
    """|V| (len(minutes), n_bus) by HELM, used to screen a whole window before runpp confirms."""
    from capacity.helm import solve

    feeder = _cached_feeder(name)
    p_kw = d.p_kw[minutes].copy()
    index = {int(b): i for i, b in enumerate(feeder.bus_ids)}
    for flex in feeder_case(name).flexibilities:
        p_kw[:, index[flex.bus_id]] += flex_p_kw.get(flex.name, 0.0)
    res = solve(feeder, p_kw=p_kw, q_kvar=d.q_kvar[minutes])
    assert res.converged.all()
    return np.abs(res.v_pu)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_heimschuh_midday_rise_and_evening_discharge_region(seed: int) -> None:
    name = "heimschuh-like"
    net = load_pandapower_net(name)
    d = day_profiles(name, seed=seed)
    off = {"CB": 0.0, "CS01": 0.0, "CS02": 0.0}
    lv = slice(1, None)  # bus 0 is the 20 kV slack

    midday = np.arange(_minute(10), _minute(15))
    v_mid = _helm_v_pu(name, d, off, midday)[:, lv].max(axis=1)
    v_mid_inject = _helm_v_pu(name, d, off | {"CB": -50.0}, midday)[:, lv].max(axis=1)
    sunny = int(midday[np.argmax(v_mid)])
    v_sunny = _runpp(apply_minute(net, d, sunny, off))[lv].max()
    assert 1.02 < v_sunny <= V_HIGH  # PV lifts voltages above 1.01 pu without breaking the limit
    assert np.all(v_mid <= V_HIGH)
    assert _runpp(apply_minute(net, d, sunny, off | {"CB": -50.0}))[lv].max() > V_HIGH
    assert 0.05 < np.mean(v_mid_inject > V_HIGH) < 1.0  # the injection side binds at times

    evening = np.arange(_minute(17), _minute(22))
    v_eve = _helm_v_pu(name, d, off, evening)[:, lv].min(axis=1)
    worst = int(evening[np.argmin(v_eve)])
    # at the evening peak the battery must discharge (Fig. 11 highlighted region) ...
    assert _runpp(apply_minute(net, d, worst, off))[lv].min() < V_LOW
    # ... discharging is enough ...
    assert _runpp(apply_minute(net, d, worst, off | {"CB": -50.0}))[lv].min() > V_LOW
    v_eve_discharge = _helm_v_pu(name, d, off | {"CB": -50.0}, evening)[:, lv].min(axis=1)
    assert np.all(v_eve_discharge > V_LOW)
    # ... and with the battery discharging the stations can charge there (11 kW each), which
    # without the battery they cannot (even at 0 kW the limit is broken)
    both = {"CS01": 11.0, "CS02": 11.0}
    assert _runpp(apply_minute(net, d, worst, off | both | {"CB": -50.0}))[lv].min() > V_LOW
    assert _runpp(apply_minute(net, d, worst, off | both))[lv].min() < V_LOW


# --- cigre-lv -----------------------------------------------------------------------------


def test_cigre_lv_has_four_flexibilities_and_keeps_the_benchmark() -> None:
    import pandapower.networks as pn

    case = feeder_case("cigre-lv")
    net = load_pandapower_net("cigre-lv")
    ref = pn.create_cigre_network_lv()
    assert len(case.flexibilities) >= 4
    kinds = [f.kind for f in case.flexibilities]
    assert kinds.count(FlexibilityKind.CHARGING_STATION) == 3
    assert kinds.count(FlexibilityKind.COMMUNITY_BATTERY) == 1
    np.testing.assert_array_equal(net.bus.index, ref.bus.index)
    assert len(net.line) == len(ref.line) and len(net.switch) == len(ref.switch) == 3
    # with PV and flexibilities at 0, the base case is CIGRE's own load flow (slack at 1.02 pu)
    assert case.v_slack_pu == 1.02
    ref.ext_grid["vm_pu"] = case.v_slack_pu
    np.testing.assert_allclose(_runpp(net), _runpp(ref), atol=1e-9)
    residential = {int(b) for b, n in zip(net.bus.index, net.bus.name, strict=True) if " R" in n}
    assert all(f.bus_id in residential for f in case.flexibilities)


@pytest.mark.parametrize("name", FEEDER_NAMES)
def test_helm_matches_newton_raphson_on_profile_minutes(name: str) -> None:
    from capacity.helm import solve

    feeder = load_feeder(name)
    net = load_pandapower_net(name)
    d = day_profiles(name)
    minutes = [_minute(4), _minute(12, 30), _minute(19, 15)]
    res = solve(feeder, p_kw=d.p_kw[minutes], q_kvar=d.q_kvar[minutes])
    assert res.converged.all()
    for i, t in enumerate(minutes):
        np.testing.assert_allclose(np.abs(res.v_pu[i]), _runpp(apply_minute(net, d, t)), atol=1e-7)


@pytest.mark.parametrize("name", FEEDER_NAMES)
def test_loaded_feeder_carries_the_case_flexibilities(name: str) -> None:
    case = feeder_case(name)
    assert load_feeder(name).flexibilities == case.flexibilities
    for flex_name, energy_kwh in case.storage_energy_kwh.items():
        flex = next(f for f in case.flexibilities if f.name == flex_name)
        assert flex.kind is FlexibilityKind.COMMUNITY_BATTERY and energy_kwh > 0


def test_cigre_lv_loads_alone_are_feasible_and_station_bands_bind_in_the_evening() -> None:
    name = "cigre-lv"
    net = load_pandapower_net(name)
    d = day_profiles(name, seed=0)
    lv = np.asarray(_cached_feeder(name).bus_vn_kv) < 1.0
    allday = np.arange(1440)
    v_off = _helm_v_pu(name, d, {}, allday)[:, lv]
    assert v_off.min() > V_LOW and v_off.max() < V_HIGH
    worst = int(np.argmin(v_off.min(axis=1)))
    assert _runpp(apply_minute(net, d, worst))[lv].min() > V_LOW
    stations = {"CS01": 22.0, "CS02": 22.0, "CS03": 22.0}
    v_cs = _helm_v_pu(name, d, stations, allday)[:, lv].min(axis=1)
    assert 0.02 < np.mean(v_cs < V_LOW) < 0.5  # binding at times, not all day
    assert int(np.argmin(v_cs)) in range(_minute(16), _minute(23))
    assert _runpp(apply_minute(net, d, int(np.argmin(v_cs)), stations))[lv].min() < V_LOW


def test_calibration_report_rows_and_cli_errors(capsys: pytest.CaptureFixture[str]) -> None:
    from capacity.feeders import calibration

    row = calibration.paper_row(0)
    assert row["Vmin eve peak"] < V_LOW < row["Vmin day CS off"]
    assert row["Vmin eve UL01 only"] < V_LOW
    with pytest.raises(SystemExit):
        calibration.main(["--seeds", "0"])
    assert "--seeds must be >= 1" in capsys.readouterr().err
