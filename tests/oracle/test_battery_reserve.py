"""The oracle's view of the community battery: metered charge, reserve, bands inside both."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from capacity.ocm.policy import BandPolicy
from capacity.storage import BatteryStorage, default_storage, energy_for_power
from oracle.battery import (
    BatteryLimits,
    fill_power_w,
    limited_devices,
    needed_discharge_profile_kw,
    reserve_wh,
    soc_after_wh,
)
from oracle.service import OcmSettings, _guarantee_held, compute_from_inputs
from oracle.state import feeder_model
from tests.oracle.oracle_helpers import audit_stale

STORAGE = BatteryStorage(100_000, 10_000, 90_000, 50_000)
T = 900


def _sums(powers_w: dict[int, int]):
    """A store's ``power_sums`` for a battery at constant power per interval (15 minutes)."""
    def power_sums(device_id: int, start_s: int, end_s: int, interval_s: int) -> dict[int, int]:
        assert device_id == 7 and interval_s == T
        return {k: 15 * p for k, p in powers_w.items() if start_s <= k * T < end_s}
    return power_sums


def test_the_metered_charge_equals_the_market_s_replay_of_the_same_powers() -> None:
    powers = [-30_000, 12_345, 0, -7, 49_999, -50_000, -50_000, -50_000, -50_000]
    sums = _sums({100 + i: p for i, p in enumerate(powers)})
    for last in range(100, 100 + len(powers)):
        assert soc_after_wh(STORAGE, 7, sums, 100, last, T) == STORAGE.replay_soc_wh(
            powers[:last - 99], T)
    assert soc_after_wh(STORAGE, 7, sums, 100, 99, T) == STORAGE.initial_soc_wh
    gap = _sums({100: -20_000, 102: -20_000})  # interval 101 unmetered: 0 W
    assert soc_after_wh(STORAGE, 7, gap, 100, 102, T) == STORAGE.replay_soc_wh(
        [-20_000, 0, -20_000], T)


def test_the_reserve_is_soc_min_plus_the_cells_of_the_next_hours() -> None:
    needed = np.zeros(96)
    assert reserve_wh(STORAGE, needed, 40, 32, T) == (STORAGE.soc_min_wh, None)
    needed[72:80] = 20.0  # 18:00-20:00 need 20 kW: 40 kWh AC
    cells = int(np.ceil(40_000 / 0.95))
    assert reserve_wh(STORAGE, needed, 60, 32, T) == (10_000 + cells, 12)  # 15:00: 18:00 next
    assert reserve_wh(STORAGE, needed, 75, 32, T) == (10_000 + int(np.ceil(20_000 / 0.95)), 1)
    assert reserve_wh(STORAGE, needed, 30, 32, T) == (STORAGE.soc_min_wh, None)  # 07:45 + 8 h
    needed[0] = 40.0  # after midnight: the horizon wraps
    assert reserve_wh(STORAGE, needed, 95, 1, T) == (10_000 + int(np.ceil(10_000 / 0.95)), 1)
    needed[:] = 50.0
    assert reserve_wh(STORAGE, needed, 0, 32, T)[0] == STORAGE.soc_max_wh


def test_the_reserve_covers_the_worst_previous_day_not_an_envelope_of_days() -> None:
    needed = np.zeros((2, 96))
    needed[0, 72:76] = 20.0  # day 1: 18:00-19:00 at 20 kW (20 kWh)
    needed[1, 76:80] = 10.0  # day 2: 19:00-20:00 at 10 kW (10 kWh)
    assert reserve_wh(STORAGE, needed, 60, 32, T)[0] == 10_000 + int(np.ceil(20_000 / 0.95))
    assert reserve_wh(STORAGE, needed, 75, 32, T)[0] == 10_000 + int(np.ceil(10_000 / 0.95))


def test_below_the_reserve_the_band_restores_it_before_it_is_needed() -> None:
    assert fill_power_w(STORAGE, 30_000, 30_000, 4, T) == 0
    assert fill_power_w(STORAGE, 30_000, 40_000, None, T) == 0
    p = fill_power_w(STORAGE, 30_000, 40_000, 8, T)  # 2 h to store 10 kWh at 95 %
    assert p == 5264  # ceil(10 kWh / 0.95 / 2 h)
    soc = 30_000
    for _ in range(8):
        soc = STORAGE.soc_after(soc, energy_for_power(p, T))
    assert 40_000 <= soc <= 40_000 + 8  # restored in time (rounding against the battery)
    limits = BatteryLimits.of(STORAGE, 7, 30_000, 40_000, T, fill_intervals=8)
    assert limits.p_min_fill_w == p and energy_for_power(limits.p_min_keep_w, T) == 0
    at_once = BatteryLimits.of(STORAGE, 7, 80_000, 90_000, T, fill_intervals=1)
    assert 0 < at_once.p_min_fill_w <= at_once.p_max_soc_w


def test_limits_keep_the_reserve_and_narrow_only_the_battery() -> None:
    limits = BatteryLimits.of(STORAGE, 7, 40_000, 30_000, T)
    assert STORAGE.soc_after(40_000, energy_for_power(limits.p_min_keep_w, T)) >= 30_000
    assert limits.p_min_soc_w < limits.p_min_keep_w == limits.p_min_fill_w < 0
    assert limits.p_max_soc_w > 0
    below = BatteryLimits.of(STORAGE, 7, 20_000, 30_000, T)  # already below its reserve
    assert energy_for_power(below.p_min_keep_w, T) == 0
    devices = [[7, 10, -50_000, 50_000, "community_battery"],
               [8, 8, 0, 22_000, "charging_station"]]
    kept = limited_devices(devices, limits.as_inputs(), "keep")
    assert kept[0][2:4] == [limits.p_min_keep_w, 50_000] and kept[1] == devices[1]
    full = BatteryLimits.of(STORAGE, 7, 88_000, 30_000, T)  # nearly full: little to charge
    assert limited_devices(devices, full.as_inputs(), "keep")[0][3] == full.p_max_soc_w < 50_000
    assert limited_devices(devices, limits.as_inputs(), "soc")[0][2] == -50_000  # rated
    urgent = BatteryLimits.of(STORAGE, 7, 10_000, 90_000, T, fill_intervals=1)
    assert urgent.p_min_fill_w > 50_000  # more than the rating could give
    assert limited_devices(devices, urgent.as_inputs(), "fill")[0][2:4] == [50_000, 50_000]


@pytest.mark.parametrize("hours", [-1, 24.5, 0.01])
def test_reserve_hours_out_of_range_are_refused(hours: float) -> None:
    with pytest.raises(ValueError, match="battery_reserve_h"):
        OcmSettings(battery_reserve_h=hours)


def test_the_band_keeps_the_metered_charge_and_the_reserve(evening) -> None:
    _, oracle, _, target = evening
    row = oracle.store.interval(target)
    assert row is not None and row.status == "written"
    battery = row.inputs["battery"]
    storage = default_storage(50_000)
    assert battery["soc_wh"] == storage.soc_after(storage.initial_soc_wh,
                                                  energy_for_power(-20_000, T))
    assert battery["reserve_wh"] > storage.soc_min_wh  # the evening needs the battery
    device = battery["device_id"]
    k = row.bands["device_ids"].index(device)
    floor = battery[f"p_min_{row.bands['battery_tier']}_w"]
    assert row.bands["p_min_w"][k] >= floor
    assert row.bands["p_max_w"][k] <= battery["p_max_soc_w"]


def test_no_band_keeps_a_reserve_the_grid_needs_now_so_it_is_released(evening) -> None:
    _, oracle, _, target = evening
    inputs = oracle.store.interval(target).inputs
    storage = default_storage(50_000)
    soc = storage.soc_min_wh + 6_000
    tight = BatteryLimits.of(storage, inputs["battery"]["device_id"], soc, storage.soc_max_wh,
                             T).as_inputs()
    out = compute_from_inputs(oracle.feeder, {**inputs, "battery": tight})
    assert out["reserve_kept"] is False  # the evening needs a discharge now
    k = out["device_ids"].index(tight["device_id"])
    assert tight["p_min_soc_w"] <= out["p_min_w"][k] <= out["p_max_w"][k] < 0
    # below the reserve exactly the discharge the grid needs, certified like the whole box
    assert out["p_min_w"][k] == out["p_max_w"][k] and out["nr"].failed == 0
    stations = [i for i, d in enumerate(inputs["devices"]) if d[4] == "charging_station"]
    assert all(out["p_min_w"][i] == 0 for i in stations)
    assert out["battery_tier"] == "soc"
    loose = {**tight, "p_min_fill_w": tight["p_min_soc_w"], "p_min_keep_w": tight["p_min_soc_w"]}
    again = compute_from_inputs(oracle.feeder, {**inputs, "battery": loose})
    assert again["reserve_kept"] and again["battery_tier"] == "fill"


def test_the_audit_recomputes_the_battery_part_from_the_chain(evening) -> None:
    d, _, ocm, target = evening
    for hours, stale in ((8.0, False), (4.0, True)):
        verdicts = audit_stale(d, dataclasses.replace(ocm, battery_reserve_h=hours), target)
        assert verdicts and all(v is stale for v in verdicts)


def test_the_reserve_funds_the_stations_guarantee_on_top_of_the_grid_s_own_need() -> None:
    feeder = feeder_model("heimschuh-like")
    battery = next(f for f in feeder.flexibilities if f.kind.value == "community_battery")
    stations = tuple((f.bus_id, 4_200) for f in feeder.flexibilities
                     if f.kind.value == "charging_station")
    grid = needed_discharge_profile_kw("heimschuh-like", 1, 3, battery.bus_id, 50_000, 950_000, T)
    with_guarantee = needed_discharge_profile_kw("heimschuh-like", 1, 3, battery.bus_id, 50_000,
                                                 950_000, T, stations)
    assert grid.shape == with_guarantee.shape == (3, 96)
    assert np.all(with_guarantee >= grid - 1e-3)  # more load never needs less discharge
    assert (with_guarantee - grid).sum() * T / 3600 > 5.0  # kWh over the three days' evenings
    storage = default_storage(50_000)
    evening = 68  # 17:00: the next 8 h hold the evening peak
    full, _ = reserve_wh(storage, with_guarantee, evening, 32, T)
    own, _ = reserve_wh(storage, grid, evening, 32, T)
    assert storage.soc_min_wh <= own < full <= storage.soc_max_wh


def test_limits_between_the_grid_s_reserve_and_the_full_one() -> None:
    limits = BatteryLimits.of(STORAGE, 7, 50_000, 60_000, T, reserve_grid=45_000)
    assert limits.reserve_grid_wh == 45_000 and limits.reserve_wh == 60_000
    assert energy_for_power(limits.p_min_keep_w, T) == 0  # below the full reserve: no discharge
    assert -50_000 < limits.p_min_grid_w < 0  # down to the grid's own reserve
    assert limits.p_min_soc_w < limits.p_min_grid_w
    assert STORAGE.soc_after(50_000, energy_for_power(limits.p_min_grid_w, T)) >= 45_000
    assert STORAGE.soc_after(50_000, energy_for_power(limits.p_min_grid_w - 100, T)) < 45_000
    same = BatteryLimits.of(STORAGE, 7, 50_000, 60_000, T)  # no guarantee to fund
    assert same.reserve_grid_wh == same.reserve_wh and same.p_min_grid_w == same.p_min_keep_w
    above = BatteryLimits.of(STORAGE, 7, 50_000, 60_000, T, reserve_grid=80_000)
    assert above.reserve_grid_wh == 60_000  # never above the full reserve
    devices = [[7, 10, -50_000, 50_000, "community_battery"]]
    assert limited_devices(devices, limits.as_inputs(), "grid")[0][2] == limits.p_min_grid_w


POLICY_OCM = {"objective": "fair",
              "policy": {"guaranteed_min_w": 4_200, "station_on_min_w": 4_140,
                         "committed_min_w": {}}}


def test_the_guarantee_is_held_only_when_every_station_reaches_it() -> None:
    devices = [[7, 10, -50_000, 50_000, "community_battery"],
               [8, 8, 0, 22_000, "charging_station"], [9, 13, 0, 22_000, "charging_station"]]
    policy = BandPolicy()
    assert _guarantee_held(np.array([[-9.0, 4.2, 11.0], [0.0, 5.0, 4.2]]), devices, policy)
    assert not _guarantee_held(np.array([[-9.0, 4.2, 11.0], [0.0, 5.0, 4.1]]), devices, policy)
    assert _guarantee_held(np.array([[-9.0, 0.0, 0.0]]), devices, None)  # no policy: nothing owed
    committed = BandPolicy(committed_min_kw={"device-8": 7.0})
    assert not _guarantee_held(np.array([[0.0, 5.0, 5.0]]), devices, committed)


def test_between_the_reserves_the_stations_keep_their_guarantee_from_the_battery(evening) -> None:
    _, oracle, _, target = evening
    inputs = oracle.store.interval(target).inputs
    inputs = {**inputs, "ocm": {**inputs["ocm"], **POLICY_OCM}}
    storage = default_storage(50_000)
    soc = storage.soc_min_wh + 30_000
    stations = [i for i, d in enumerate(inputs["devices"]) if d[4] == "charging_station"]
    between = BatteryLimits.of(storage, inputs["battery"]["device_id"], soc, storage.soc_max_wh,
                               T, reserve_grid=storage.soc_min_wh).as_inputs()
    out = compute_from_inputs(oracle.feeder, {**inputs, "battery": between})
    k = out["device_ids"].index(between["device_id"])
    assert out["battery_tier"] == "grid" and out["reserve_kept"] is False
    assert all(out["p_max_w"][i] >= 4_200 and out["p_min_w"][i] == 0 for i in stations)
    # exactly the discharge the grid and the guarantees need: the market gets none of it
    assert between["p_min_grid_w"] <= out["p_min_w"][k] == out["p_max_w"][k] < 0
    assert out["nr"].failed == 0
    empty = BatteryLimits.of(storage, between["device_id"], soc, storage.soc_max_wh, T,
                             reserve_grid=soc).as_inputs()  # nothing above the grid's own
    bare = compute_from_inputs(oracle.feeder, {**inputs, "battery": empty})
    assert bare["battery_tier"] == "soc" and bare["reserve_kept"] is False
    j = bare["device_ids"].index(empty["device_id"])
    assert bare["p_min_w"][j] == bare["p_max_w"][j] > out["p_max_w"][k]  # less discharge
    assert all(bare["p_min_w"][i] == 0 for i in stations)
