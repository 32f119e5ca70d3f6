"""Minute day profiles: determinism, shapes, PV and load shape, energy, reactive power, errors."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pvlib
import pytest

from capacity.profiles import (
    DEFAULT_SITE,
    LOAD_POWER_FACTOR,
    MINUTES_PER_DAY,
    Customer,
    build_day_profiles,
    household_load_kw,
    minute_index,
    pv_kw,
    slp_day_fraction,
)

WEEKDAY = "2026-03-18"  # a Wednesday
CUSTOMERS = (
    Customer("single", 1, annual_kwh=4000.0, pv_kwp=5.0),
    Customer("twin", 1, annual_kwh=4000.0, pv_kwp=8.0),
    Customer("street", 2, annual_kwh=200 * 4000.0, pv_kwp=0.0, n_households=200),
    Customer("shop", 3, annual_kwh=30000.0, pv_kwp=20.0, n_households=2, profile="commercial"),
)
BUS_IDS = (0, 1, 2, 3)


def _profiles(seed: int = 0, **kwargs):
    return build_day_profiles(CUSTOMERS, BUS_IDS, date=WEEKDAY, seed=seed, **kwargs)


def _hourly(x: np.ndarray) -> np.ndarray:
    return x.reshape(24, 60, *x.shape[1:]).mean(axis=1)


def _solar_elevation_deg(date: str) -> np.ndarray:
    times = minute_index(date)
    loc = pvlib.location.Location(DEFAULT_SITE.latitude_deg, DEFAULT_SITE.longitude_deg)
    return loc.get_solarposition(times)["apparent_elevation"].to_numpy()


def test_same_seed_gives_identical_profiles_and_other_seeds_differ() -> None:
    a, b, c = _profiles(3), _profiles(3), _profiles(4)
    for name in ("p_kw", "q_kvar", "load_kw", "pv_kw"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.cloud_cover == b.cloud_cover
    assert not np.allclose(a.load_kw, c.load_kw)
    assert not np.allclose(a.pv_kw, c.pv_kw)


def test_shapes_order_and_time_index() -> None:
    d = _profiles()
    assert d.p_kw.shape == d.q_kvar.shape == (MINUTES_PER_DAY, len(BUS_IDS))
    assert d.load_kw.shape == d.pv_kw.shape == d.load_kvar.shape == (1440, len(CUSTOMERS))
    np.testing.assert_array_equal(d.bus_ids, BUS_IDS)
    assert len(d.time) == 1440 and str(d.time.tz) == DEFAULT_SITE.tz
    assert d.time[0] == pd.Timestamp(WEEKDAY, tz=DEFAULT_SITE.tz)
    assert (d.time[1] - d.time[0]) == pd.Timedelta(minutes=1)
    for arr in (d.p_kw, d.q_kvar, d.load_kw, d.pv_kw):
        assert np.all(np.isfinite(arr))
    assert np.all(d.load_kw >= 0) and np.all(d.pv_kw >= 0)


def test_bus_aggregation_is_load_minus_pv_and_bus_order_is_respected() -> None:
    d = build_day_profiles(CUSTOMERS, (3, 2, 1, 0), date=WEEKDAY, seed=1)
    net = d.load_kw - d.pv_kw
    np.testing.assert_allclose(d.p_kw[:, 0], net[:, 3])  # bus 3: shop
    np.testing.assert_allclose(d.p_kw[:, 1], net[:, 2])  # bus 2: street
    np.testing.assert_allclose(d.p_kw[:, 2], net[:, 0] + net[:, 1])  # bus 1: single + twin
    np.testing.assert_array_equal(d.p_kw[:, 3], 0.0)  # bus 0: nobody


def test_reactive_power_at_load_power_factor_and_pv_at_unity() -> None:
    d = _profiles()
    tan_phi = math.tan(math.acos(LOAD_POWER_FACTOR))
    np.testing.assert_allclose(d.load_kvar, d.load_kw * tan_phi, rtol=1e-12)
    np.testing.assert_allclose(d.q_kvar[:, 1], (d.load_kw[:, 0] + d.load_kw[:, 1]) * tan_phi)
    assert np.all(d.q_kvar[:, 1:] > 0)  # inductive


def test_energy_per_customer_is_annual_times_bdew_day_fraction() -> None:
    d = _profiles()
    energy_kwh = d.load_kw.sum(axis=0) / 60.0
    annual = np.array([c.annual_kwh for c in CUSTOMERS])
    np.testing.assert_allclose(energy_kwh, annual * d.slp_day_fraction, rtol=1e-9)
    assert d.slp_day_fraction[0] == pytest.approx(slp_day_fraction(WEEKDAY, "household"))
    assert d.slp_day_fraction[3] == pytest.approx(slp_day_fraction(WEEKDAY, "commercial"))
    # the day's share of the year stays close to 1/365 (season and weekday move it): within
    # 20 % for households, and up to +30 % for a business on a weekday (G25 has quiet weekends)
    ratio = energy_kwh / (annual / 365.0)
    np.testing.assert_array_less(np.abs(ratio[:3] - 1.0), 0.2)
    assert 1.0 < ratio[3] < 1.3


@pytest.mark.parametrize("date", ["2026-01-21", "2026-06-17", "2026-06-21", "2026-10-14"])
def test_bdew_day_fraction_is_close_to_one_over_365(date: str) -> None:
    for kind in ("household", "commercial"):
        ratio = slp_day_fraction(date, kind) * 365.0
        assert 0.5 < ratio < 1.3, (date, kind, ratio)
    # a household's Wednesday in winter uses more than one in summer
    assert slp_day_fraction("2026-01-21") > slp_day_fraction("2026-06-17")


def test_households_differ_but_follow_the_bdew_shape() -> None:
    d = _profiles()
    single, twin = d.load_kw[:, 0], d.load_kw[:, 1]
    assert np.corrcoef(single, twin)[0, 1] < 0.9
    assert single.max() > 3.0 * single.mean()  # appliance spikes on a single household


def test_aggregated_load_has_morning_and_evening_peaks() -> None:
    street = _hourly(_profiles().load_kw[:, 2])  # 200 households, weekday
    night = street[2:5].mean()
    morning_peak = street[6:9].max()
    late_morning_trough = street[9:11].min()
    afternoon = street[14:17].mean()
    evening_peak = street[17:22].max()
    assert morning_peak > 1.3 * night
    assert morning_peak > 1.03 * late_morning_trough
    assert evening_peak > 1.3 * afternoon
    assert int(np.argmax(street)) in range(17, 22)  # the day's maximum is in the evening


@pytest.mark.parametrize("date", [WEEKDAY, "2026-06-17"])
def test_pv_is_zero_at_night_and_peaks_near_solar_noon(date: str) -> None:
    d = build_day_profiles(CUSTOMERS, BUS_IDS, date=date, seed=2, cloud_cover=0.0)
    elevation = _solar_elevation_deg(date)
    total = d.pv_kw.sum(axis=1)
    assert np.all(total[elevation <= 0.0] == 0.0)
    assert np.all(total[elevation > 10.0] > 0.0)
    solar_noon = int(np.argmax(elevation))
    assert abs(int(np.argmax(total)) - solar_noon) <= 75
    kwp = sum(c.pv_kwp for c in CUSTOMERS)
    assert 0.55 * kwp < total.max() <= kwp  # clear day: most of the rating, never above it


def test_clouds_reduce_pv_energy() -> None:
    energy = [_profiles(cloud_cover=c).pv_kw.sum() / 60.0 for c in (0.0, 0.5, 1.0)]
    assert energy[0] > energy[1] > energy[2] > 0.0
    assert energy[2] < 0.5 * energy[0]  # overcast: only the diffuse part


def test_default_cloud_cover_is_drawn_from_the_seed() -> None:
    covers = {round(_profiles(seed).cloud_cover, 12) for seed in range(4)}
    assert len(covers) == 4 and all(0.0 <= c <= 0.5 for c in covers)


def test_pv_only_on_customers_with_kwp() -> None:
    rng = np.random.default_rng(0)
    out = pv_kw(np.array([0.0, 10.0]), WEEKDAY, rng, cloud_cover=0.2)
    assert out.shape == (1440, 2)
    assert np.all(out[:, 0] == 0.0) and out[:, 1].max() > 5.0


def test_household_load_rejects_bad_annual_energy() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="annual_kwh"):
        household_load_kw(np.array([1000.0, -1.0]), WEEKDAY, rng)
    with pytest.raises(ValueError, match="annual_kwh"):
        household_load_kw(np.array([np.nan]), WEEKDAY, rng)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"annual_kwh": -1.0}, "annual_kwh"),
        ({"annual_kwh": math.inf}, "annual_kwh"),
        ({"annual_kwh": 1.0, "pv_kwp": -2.0}, "pv_kwp"),
        ({"annual_kwh": 1.0, "n_households": 0}, "n_households"),
        ({"annual_kwh": 1.0, "profile": "farm"}, "profile"),
    ],
)
def test_customer_rejects_bad_data(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Customer("x", 0, **kwargs)


def test_build_day_profiles_errors() -> None:
    with pytest.raises(ValueError, match="unknown bus 3"):
        build_day_profiles(CUSTOMERS, (0, 1, 2), date=WEEKDAY)
    with pytest.raises(ValueError, match="unique"):
        build_day_profiles(CUSTOMERS, (0, 1, 1, 2, 3), date=WEEKDAY)
    with pytest.raises(ValueError, match="names must be unique"):
        build_day_profiles((*CUSTOMERS, CUSTOMERS[0]), BUS_IDS, date=WEEKDAY)
    with pytest.raises(ValueError, match="seed"):
        build_day_profiles(CUSTOMERS, BUS_IDS, date=WEEKDAY, seed=-1)
    with pytest.raises(ValueError, match="seed"):
        build_day_profiles(CUSTOMERS, BUS_IDS, date=WEEKDAY, seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cloud_cover"):
        build_day_profiles(CUSTOMERS, BUS_IDS, date=WEEKDAY, cloud_cover=1.5)
    with pytest.raises(ValueError, match="date"):
        build_day_profiles(CUSTOMERS, BUS_IDS, date="not a date")
    with pytest.raises(ValueError, match="date"):
        build_day_profiles(CUSTOMERS, BUS_IDS, date="2026-03-18 12:00")


@pytest.mark.parametrize(
    "date", ["2026-03-29", "2026-10-25", "2026-01-01", "2026-12-31", "2028-02-29"]
)
def test_dst_year_boundary_and_leap_days_give_full_days(date: str) -> None:
    d = build_day_profiles(CUSTOMERS, BUS_IDS, date=date, seed=0)
    assert d.p_kw.shape == (1440, len(BUS_IDS)) and np.all(np.isfinite(d.p_kw))
    assert d.time[0] == pd.Timestamp(date, tz=DEFAULT_SITE.tz)
    annual = np.array([c.annual_kwh for c in CUSTOMERS])
    np.testing.assert_allclose(d.load_kw.sum(axis=0) / 60.0, annual * d.slp_day_fraction)
