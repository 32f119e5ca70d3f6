"""The battery's storage model: floors, the default deployed battery, replay."""

from __future__ import annotations

import pytest

from capacity.storage import BatteryStorage, default_storage, energy_for_power

STORAGE = BatteryStorage(100_000, 10_000, 90_000, 50_000)


def test_default_storage_is_two_hours_between_10_and_90_percent() -> None:
    s = default_storage(50_000)
    assert (s.capacity_wh, s.soc_min_wh, s.soc_max_wh, s.initial_soc_wh) == (
        100_000, 10_000, 90_000, 50_000)
    assert s.charge_efficiency_ppm == s.discharge_efficiency_ppm == 950_000


def test_a_floor_keeps_a_reserve_and_never_goes_below_soc_min() -> None:
    assert STORAGE.max_discharge_wh(50_000) == 40_000 * 95 // 100
    assert STORAGE.max_discharge_wh(50_000, floor_wh=30_000) == 20_000 * 95 // 100
    assert STORAGE.max_discharge_wh(50_000, floor_wh=0) == STORAGE.max_discharge_wh(50_000)
    assert STORAGE.max_discharge_wh(20_000, floor_wh=30_000) == 0  # below its floor: none
    e = STORAGE.max_discharge_wh(50_000, floor_wh=30_000)
    assert STORAGE.soc_after(50_000, -e) >= 30_000 > STORAGE.soc_after(50_000, -e - 2)


def test_power_range_with_a_floor() -> None:
    lo, hi = STORAGE.power_range_w(50_000, 900, floor_wh=45_000)
    assert STORAGE.soc_after(50_000, energy_for_power(lo, 900)) >= 45_000
    assert STORAGE.soc_after(50_000, energy_for_power(lo - 4, 900)) < 45_000
    assert hi == STORAGE.power_range_w(50_000, 900)[1]
    at_floor = STORAGE.power_range_w(50_000, 900, floor_wh=90_000)[0]
    assert at_floor <= 0 and energy_for_power(at_floor, 900) == 0  # no energy drawn
    with pytest.raises(ValueError, match="outside"):
        STORAGE.power_range_w(95_000, 900)
    with pytest.raises(ValueError, match="positive"):
        STORAGE.power_range_w(50_000, 0)


def test_replay_clamps_after_every_interval() -> None:
    assert STORAGE.replay_soc_wh([], 900) == 50_000
    assert STORAGE.replay_soc_wh([-200_000, 4_000], 900) == 10_000 + 1000 * 95 // 100
    assert STORAGE.replay_soc_wh([400_000] * 3, 900) == 90_000


@pytest.mark.parametrize("kwargs, match", [
    ({"capacity_wh": 0}, "positive"), ({"soc_min_wh": -1}, "soc_min_wh"),
    ({"initial_soc_wh": 95_000}, "initial SoC"), ({"charge_efficiency_ppm": 0}, "charge_eff"),
    ({"discharge_efficiency_ppm": 1_000_001}, "discharge_eff")])
def test_bad_storage_is_refused(kwargs, match) -> None:
    base = {"capacity_wh": 100_000, "soc_min_wh": 10_000, "soc_max_wh": 90_000,
            "initial_soc_wh": 50_000, **kwargs}
    with pytest.raises(ValueError, match=match):
        BatteryStorage(**base)
