"""Unit tests of the simulation's agents, community case and configuration (no chain)."""

from __future__ import annotations

import numpy as np
import pytest

from capacity.feeders import day_profiles, feeder_case
from gridshare.sim import SimulationConfig
from gridshare.sim.agents import (
    EvSession,
    StationState,
    ev_sessions,
    interval_net_wh,
    limit_prices_eur_per_kwh,
)
from gridshare.sim.community_case import community_case, slot_means
from market.aggregator import schedule_hour

STATIONS = [("CS01", 22.0), ("CS02", 22.0)]


def test_ev_sessions_are_seeded_valid_and_reachable():
    a, b = ev_sessions(STATIONS, seed=3), ev_sessions(STATIONS, seed=3)
    assert a == b
    assert a != ev_sessions(STATIONS, seed=4)
    for s in a:
        hours = (s.depart_min - s.arrive_min) / 60
        assert s.energy_kwh <= s.p_max_kw * hours + 1e-9
        assert s.station in ("CS01", "CS02")


def test_station_delivers_at_most_what_is_needed_and_allowed():
    st = StationState("CS01", [EvSession("CS01", 0, 60, 5.0, 11.0, 10.0),
                               EvSession("CS01", 30, 120, 4.0, 11.0, 10.0)])
    assert st.max_power_kw(0, 15) == pytest.approx(11.0)  # first vehicle only, charger limit
    st.deliver(0, 15, 11.0)  # 2.75 kWh to the first vehicle
    assert st.remaining_kwh[0] == pytest.approx(2.25)
    st.deliver(15, 15, 22.0)  # more than the only connected vehicle may take
    assert st.remaining_kwh[0] == pytest.approx(0.0)
    assert st.delivered_kwh.sum() == pytest.approx(5.0)
    assert st.unmet_kwh(60) == pytest.approx(0.0)
    assert st.unmet_kwh(120) == pytest.approx(4.0)


def test_station_fleet_energy_follows_deliveries():
    st = StationState("CS01", [EvSession("CS01", 0, 30, 2.0, 11.0, 10.0),
                               EvSession("CS01", 60, 120, 4.0, 11.0, 12.0)])
    assert st.fleet_energy_kwh(0) == pytest.approx(10.0)
    st.deliver(0, 15, 11.0)  # 2.75 kWh offered, the vehicle needs 2.0
    assert st.fleet_energy_kwh(15) == pytest.approx(12.0)
    assert st.fleet_energy_kwh(45) == pytest.approx(0.0)  # left with exactly its need
    assert st.fleet_energy_kwh(60) == pytest.approx(0.0)  # arrives with the slot's flow
    assert st.fleet_energy_kwh(75) == pytest.approx(12.0)


def test_forced_station_charging_beyond_the_need_stays_feasible():
    """A band can force a station to charge more than its vehicle needs: the fleet keeps room."""
    profiles = day_profiles("heimschuh-like", seed=0)
    sessions = [EvSession("CS01", 9 * 60, 10 * 60, 1.0, 11.0, 20.0),
                EvSession("CS02", 9 * 60, 12 * 60, 1.0, 11.0, 20.0)]
    case = community_case(
        profiles.load_kw, profiles.pv_kw, battery_capacity_kwh=100, battery_soc_min_kwh=10,
        battery_soc_max_kwh=90, battery_initial_kwh=50, battery_p_kw=50, battery_eff=0.95,
        stations=STATIONS, sessions=sessions, retail_eur_per_kwh=0.30, feed_in_eur_per_kwh=0.08)
    lo = np.zeros_like(case.cs.p_charge_max_kw)
    lo[:, 36:40] = 8.0  # 8 kWh in the hour, far beyond the 1 kWh needed
    banded = case.with_bands(None, None, lo, np.array(case.cs.p_charge_max_kw))
    result = schedule_hour(banded, 9, e_init_kwh={"ess": np.array([50.0]),
                                                  "cs": np.zeros(2)})
    assert np.all(result.p_kw["cs_ch"] >= 8.0 - 1e-6)


def test_bad_ev_session_is_refused():
    with pytest.raises(ValueError, match="arrive < depart"):
        EvSession("CS01", 100, 100, 1.0, 11.0, 10.0)
    with pytest.raises(ValueError, match="energy must be >= 0"):
        EvSession("CS01", 0, 100, -1.0, 11.0, 10.0)


def test_interval_net_energy_is_the_minute_sum():
    load = np.array([[1.2, 0.0], [0.6, 0.3], [0.0, 0.3]])
    pv = np.array([[0.0, 0.6], [0.0, 0.0], [0.0, 1.2]])
    wh = interval_net_wh(load, pv, np.arange(3))
    assert wh.tolist() == [round((1.2 + 0.6) / 60 * 1000), round((-0.6 + 0.3 - 0.9) / 60 * 1000)]


def test_limit_prices_lie_between_the_tariffs():
    buy, sell = limit_prices_eur_per_kwh(50, 0.30, 0.08, seed=1)
    assert np.all((buy <= 0.30) & (buy >= 0.20))
    assert np.all((sell >= 0.08) & (sell <= 0.18))


def test_community_case_schedules_an_hour_inside_bands():
    profiles = day_profiles("heimschuh-like", seed=0)
    case = community_case(
        profiles.load_kw, profiles.pv_kw, battery_capacity_kwh=100, battery_soc_min_kwh=10,
        battery_soc_max_kwh=90, battery_initial_kwh=50, battery_p_kw=50, battery_eff=0.95,
        stations=STATIONS, sessions=ev_sessions(STATIONS, 0), retail_eur_per_kwh=0.30,
        feed_in_eur_per_kwh=0.08)
    assert case.n_slots == 96
    assert np.allclose(slot_means(profiles.load_kw)[:, 0], profiles.load_kw[:15].mean(axis=0))
    lo = np.tile(-case.ess.p_discharge_max_kw, 1)
    hi = np.array(case.ess.p_charge_max_kw)
    lo[0, 48:52], hi[0, 48:52] = 5.0, 20.0  # a band that forces charging at noon
    banded = case.with_bands(lo, hi, np.zeros_like(case.cs.p_charge_max_kw),
                             np.array(case.cs.p_charge_max_kw))
    result = schedule_hour(banded, 12, e_init_kwh={"ess": np.array([40.0]),
                                                   "cs": case.day_ahead.cs_e_kwh[:, 48]})
    net = result.p_kw["ess_ch"] - result.p_kw["ess_dis"]
    assert np.all(net >= 5.0 - 1e-6) and np.all(net <= 20.0 + 1e-6)


@pytest.mark.parametrize("kwargs, message", [
    ({"hours": 0}, "hours must lie"),
    ({"hours": 25}, "hours must lie"),
    ({"hours": 0.25}, "at least two intervals"),
    ({"interval_s": 400}, "multiple of 60"),
    ({"interval_s": 600}, "dividing 15 min"),
    ({"readings_batch_min": 7}, "must divide"),
    ({"nr_steps": -1}, "nr_steps"),
])
def test_bad_configuration_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SimulationConfig(**kwargs)


def test_feeder_without_battery_is_refused_before_deploying(tmp_path):
    from gridshare.sim import Simulation

    assert not any(f.kind.value == "community_battery"
                   for f in feeder_case("paper-test-feeder").flexibilities)
    sim = Simulation(SimulationConfig(feeder="paper-test-feeder", progress=False), tmp_path)
    block = sim.chain.block_number
    with pytest.raises(ValueError, match="no community battery"):
        sim.setup()
    assert sim.chain.block_number == block  # nothing deployed


def test_cli_reports_bad_input(tmp_path, capsys):
    from gridshare.cli import main

    assert main(["simulate", "--feeder", "no-such-feeder", "--out", str(tmp_path)]) == 1
    assert "unknown feeder" in capsys.readouterr().err
    assert main(["simulate", "--hours", "0", "--out", str(tmp_path)]) == 1
    assert "hours must lie" in capsys.readouterr().err


def test_held_back_by_names_the_binding_constraint_and_when():
    """Steps of the stay whose band was below the rating, grouped into runs of one binding
    constraint; steps outside the stay or at the rating do not count."""
    from gridshare.sim.verify import held_back_by

    minutes = np.array([1080, 1095, 1110, 1125, 1140, 1155, 1170])  # 18:00 .. 19:30
    p_max_kw = np.array([22.0, 4.2, 4.2, 0.0, 22.0, 4.2, 4.2])
    binding = ["rating", "v_low", "v_low", "line 3", "rating", "v_low", "v_low"]
    why = held_back_by(p_max_kw, 22.0, minutes, binding, arrive_min=1090, depart_min=1170)
    assert why == "v_low 18:15-18:30 (2 steps); line 3 18:45 (1 step); v_low 19:15 (1 step)"
    assert held_back_by(p_max_kw, 22.0, minutes, binding, 1080, 1095) == ""  # at the rating
    assert held_back_by(p_max_kw[:0], 22.0, minutes[:0], [], 0, 1440) == ""  # no bands at all


def test_the_tightest_step_of_each_interval_sets_its_band():
    """With several OCM steps per interval (ramps forecast), the step of the lowest P_max is the
    one that bound the published band; one per interval, in time order."""
    from gridshare.sim.verify import _tightest_step_per_interval

    governs = np.array([1080, 1080, 1080, 1095, 1095, 1110])
    p_max_kw = np.array([6.0, 4.2, 9.0, 22.0, 5.0, 7.0])
    assert _tightest_step_per_interval(governs, p_max_kw).tolist() == [1, 4, 5]
    assert _tightest_step_per_interval(governs[:0], p_max_kw[:0]).tolist() == []


def test_a_station_follows_its_plan_unless_an_older_band_held_the_plan_back():
    """Below its bound the plan is a choice (cheaper later): kept, clipped to need and band; at
    its bound the plan was held back by the band it was planned with: the band of k decides."""
    import math

    from gridshare.sim.agents import station_power_w

    band = (0, 11_000)
    assert station_power_w(2.0, 4.2, 8.0, band) == 2_000  # the plan, a choice
    assert station_power_w(2.0, 4.2, 1.5, band) == 1_500  # the vehicles take less
    assert station_power_w(4.2, 4.2, 8.0, band) == 8_000  # held back: the band of k decides
    assert station_power_w(0.0, 0.0, 8.0, band) == 8_000  # planned at a band of 0
    assert station_power_w(0.0, 0.0, 8.0, (0, 0)) == 0  # ... and still 0
    assert station_power_w(22.0, 0.0, 30.0, band) == 11_000  # planned without bands: behind
    assert station_power_w(0.0, 0.0, 5.0, band) == 5_000  # ... a plan of 0 does not hold it
    assert station_power_w(3.0, math.inf, 8.0, band) == 3_000  # no bound ever reached
    assert station_power_w(0.0, 4.2, 0.0, (0, 11_000)) == 0  # nobody connected


def test_held_back_by_names_the_battery_reserve_and_a_missing_declaration():
    from gridshare.sim.verify import _why_step

    assert _why_step("v_low", False, None, 2) == "v_low + battery reserve"
    assert _why_step("line 3", True, None, 2) == "line 3"
    assert _why_step("v_low", None, None, 2) == "v_low"  # no battery part (bands blind to it)
    assert _why_step("v_low", False, {3}, 2) == "no vehicle declared"  # station_sessions
    assert _why_step("v_low", False, {2, 3}, 2) == "v_low + battery reserve"
    assert _why_step("v_low", True, set(), 2) == "no vehicle declared"
