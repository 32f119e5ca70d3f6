"""Minute-resolution day profiles of household load and PV generation.

Units: kW and kvar, one row per minute of the local day (1440 rows), consumption positive.

- Household load: the BDEW 2025 standard load profile H25 (demandlib, dynamised, 15-min values held
  for each minute) is the expected value. Every household gets a seeded time shift, a slow
  log-normal AR(1) fluctuation and a few appliance events (kettle, cooking, washing), then is
  rescaled so that its energy on the day equals ``annual_kwh * f_day`` exactly, where ``f_day`` is
  the BDEW profile's share of the year that falls on that day (``slp_day_fraction``; 0.8..1.15 of
  1/365 depending on season and weekday). Commercial customers use BDEW G25 the same way.
- PV: pvlib's Ineichen clear-sky irradiance, transposed (isotropic sky) onto each customer's roof
  (seeded tilt and azimuth), attenuated by a seeded cloud process shared by the village (with a
  small per-roof lag), a Faiman cell temperature and a fixed system efficiency, clipped at the
  inverter rating (= kWp).
- Reactive power: loads at ``LOAD_POWER_FACTOR`` (inductive, q > 0), PV at unity power factor.

Everything is deterministic from the seed: independent random streams for load and PV are derived
from ``numpy.random.SeedSequence(seed)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
import pvlib
from demandlib.bdew import G25, H25
from scipy.signal import lfilter
from scipy.special import expit, ndtri

MINUTES_PER_DAY = 1440
LOAD_POWER_FACTOR = 0.95
"""cos(phi) of household and commercial loads, inductive (q = p * tan(acos(0.95)) = 0.329 p)."""
PV_POWER_FACTOR = 1.0
"""PV inverters at unity power factor (no reactive power)."""

SLP_KW_PER_KWH_PER_YEAR = 1e-6
"""demandlib's BDEW25 profiles are in kW per GWh/a; times this factor gives kW per kWh/a."""

ProfileKind = Literal["household", "commercial"]


@dataclass(frozen=True)
class Site:
    """Where the feeder is: used by the PV model (degrees, metres, IANA time zone)."""

    latitude_deg: float = 46.76
    longitude_deg: float = 15.49
    altitude_m: float = 300.0
    tz: str = "Europe/Vienna"
    name: str = "Heimschuh, Styria (AT)"


DEFAULT_SITE = Site()


@dataclass(frozen=True)
class Customer:
    """An uncontrollable load point: households (or a business) and their rooftop PV.

    ``annual_kwh``: yearly consumption of all households of this customer together (kWh/a).
    ``pv_kwp``: installed PV peak power (kWp, = inverter AC rating). ``n_households``: how many
    independent households are summed (a multi-family house, or a lumped load of a street).
    ``profile``: "household" (BDEW H25) or "commercial" (BDEW G25).
    """

    name: str
    bus_id: int
    annual_kwh: float
    pv_kwp: float = 0.0
    n_households: int = 1
    profile: ProfileKind = "household"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.annual_kwh) and self.annual_kwh >= 0):
            raise ValueError(f"customer {self.name!r}: annual_kwh must be finite and >= 0")
        if not (math.isfinite(self.pv_kwp) and self.pv_kwp >= 0):
            raise ValueError(f"customer {self.name!r}: pv_kwp must be finite and >= 0")
        if self.n_households < 1:
            raise ValueError(f"customer {self.name!r}: n_households must be >= 1")
        if self.profile not in ("household", "commercial"):
            raise ValueError(
                f"customer {self.name!r}: profile must be 'household' or 'commercial', "
                f"got {self.profile!r}"
            )


@dataclass(frozen=True)
class DayProfiles:
    """One day of minute profiles for a feeder.

    ``p_kw``, ``q_kvar``: shape (1440, n_bus) in ``bus_ids`` order, the uncontrollable net
    consumption per bus (load minus PV; flexibilities not included). ``load_kw``, ``load_kvar``,
    ``pv_kw`` (generation, >= 0): shape (1440, n_customer) in ``customers`` order.
    ``time``: the 1440 local minutes (tz-aware).
    """

    time: pd.DatetimeIndex
    bus_ids: np.ndarray
    p_kw: np.ndarray
    q_kvar: np.ndarray
    customers: tuple[Customer, ...]
    load_kw: np.ndarray
    load_kvar: np.ndarray
    pv_kw: np.ndarray
    seed: int
    cloud_cover: float
    slp_day_fraction: np.ndarray = field(repr=False)
    """Per customer: share of its annual energy that BDEW puts on this day (1/365 on average)."""

    @property
    def minutes(self) -> np.ndarray:
        """Minute of the day, 0..1439."""
        return np.arange(MINUTES_PER_DAY)


def minute_index(date: str | pd.Timestamp, tz: str = DEFAULT_SITE.tz) -> pd.DatetimeIndex:
    """The 1440 minutes from local midnight of ``date`` (on DST days the wall clock skips or
    repeats an hour; the index still has 1440 consecutive minutes)."""
    day = _parse_date(date)
    return pd.date_range(day.tz_localize(tz), periods=MINUTES_PER_DAY, freq="1min")


def _parse_date(date: str | pd.Timestamp) -> pd.Timestamp:
    try:
        day = pd.Timestamp(date)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"date {date!r} is not a date like '2026-03-18'") from exc
    if day.tzinfo is not None:
        day = day.tz_localize(None)
    if day != day.normalize():
        raise ValueError(f"date {date!r} must be a calendar day without time of day")
    return day


def _slp_three_days_kw_per_kwh(date: pd.Timestamp, profile: ProfileKind) -> np.ndarray:
    """BDEW SLP in kW per kWh/a for the day before, the day and the day after (3*1440,)."""
    start = date - pd.Timedelta(days=1)
    idx = pd.date_range(start, periods=3 * MINUTES_PER_DAY, freq="1min")
    cls = H25 if profile == "household" else G25
    values = np.asarray(cls(idx), dtype=float) * SLP_KW_PER_KWH_PER_YEAR
    if values.shape != (3 * MINUTES_PER_DAY,) or not np.all(np.isfinite(values)):
        raise ValueError(f"demandlib returned an unusable {profile} profile for {date.date()}")
    return values


def slp_day_fraction(date: str | pd.Timestamp, profile: ProfileKind = "household") -> float:
    """Share of the annual energy that the BDEW profile puts on ``date`` (1/365 on average)."""
    day = _parse_date(date)
    slp = _slp_three_days_kw_per_kwh(day, profile)
    return float(slp[MINUTES_PER_DAY : 2 * MINUTES_PER_DAY].sum() / 60.0)


def _ar1(rng: np.random.Generator, n_steps: int, n_series: int, tau_min: float) -> np.ndarray:
    """Stationary unit-variance AR(1) series, shape (n_steps, n_series), correlation time tau."""
    phi = math.exp(-1.0 / tau_min)
    warmup = int(5 * tau_min)
    eps = rng.standard_normal((n_steps + warmup, n_series))
    x = lfilter([math.sqrt(1.0 - phi * phi)], [1.0, -phi], eps, axis=0)
    return x[warmup:]


def household_load_kw(
    annual_kwh: np.ndarray,
    date: str | pd.Timestamp,
    rng: np.random.Generator,
    profile: ProfileKind = "household",
) -> np.ndarray:
    """Stochastic minute load of independent households, shape (1440, n), kW.

    ``annual_kwh`` (n,): yearly energy per household. Each column's energy on the day equals
    ``annual_kwh * slp_day_fraction(date)`` exactly.
    """
    annual = np.asarray(annual_kwh, dtype=float)
    if annual.ndim != 1 or not np.all(np.isfinite(annual)) or np.any(annual < 0):
        raise ValueError("annual_kwh must be a 1-D array of finite values >= 0")
    day = _parse_date(date)
    n = annual.size
    slp3 = _slp_three_days_kw_per_kwh(day, profile)
    e_day_kwh = annual * slp3[MINUTES_PER_DAY : 2 * MINUTES_PER_DAY].sum() / 60.0
    if n == 0:
        return np.zeros((MINUTES_PER_DAY, 0))
    minutes = np.arange(MINUTES_PER_DAY)

    # 1. expected shape, shifted in time per household (+-45 min, sd 20 min)
    shift_min = np.clip(np.rint(rng.normal(0.0, 20.0, n)), -45, 45).astype(int)
    shape = slp3[MINUTES_PER_DAY + minutes[:, None] - shift_min[None, :]]  # (1440, n)

    # 2. slow multiplicative fluctuation: log-normal AR(1), sd 0.35, correlation time 45 min
    sigma = 0.35
    base = shape * np.exp(sigma * _ar1(rng, MINUTES_PER_DAY, n, 45.0) - 0.5 * sigma**2)

    # 3. appliance events: Poisson count, start drawn from the household's own activity profile
    max_events = 16
    n_events = np.minimum(rng.poisson(5.0, n), max_events)
    u = rng.random((max_events, n))
    cdf = np.cumsum(shape, axis=0)
    cdf /= cdf[-1]
    # vectorised inverse-CDF sampling: column j's CDF is shifted by j into one monotone array
    col = np.arange(n)
    flat_cdf = (cdf.T + col[:, None]).ravel()
    flat = np.searchsorted(flat_cdf, (u.T + col[:, None]).ravel())
    start = flat.reshape(n, max_events).T - col[None, :] * MINUTES_PER_DAY
    start = np.clip(start, 0, MINUTES_PER_DAY - 1)
    duration = rng.integers(3, 41, (max_events, n))
    power_kw = rng.uniform(0.8, 2.5, (max_events, n))
    active = np.arange(max_events)[:, None] < n_events[None, :]
    power_kw = np.where(active, power_kw, 0.0)
    steps = np.zeros((MINUTES_PER_DAY + 1, n))
    cols = np.broadcast_to(np.arange(n)[None, :], start.shape)
    np.add.at(steps, (start, cols), power_kw)
    np.add.at(steps, (np.minimum(start + duration, MINUTES_PER_DAY), cols), -power_kw)
    events = np.cumsum(steps[:-1], axis=0)
    events = np.maximum(events, 0.0)  # guard against round-off below zero

    # 4. rescale to the day's energy: events keep their power up to half the day's energy
    e_events = events.sum(axis=0) / 60.0
    cap = 0.5 * e_day_kwh
    events_scale = np.where(e_events > cap, cap / np.where(e_events > 0, e_events, 1.0), 1.0)
    events *= events_scale[None, :]
    e_events = events.sum(axis=0) / 60.0
    e_base = base.sum(axis=0) / 60.0
    base *= ((e_day_kwh - e_events) / np.where(e_base > 0, e_base, 1.0))[None, :]
    return base + events


def cloud_shading(
    rng: np.random.Generator, cloud_cover: float, n_roofs: int, max_lag_min: int = 4
) -> np.ndarray:
    """Fraction of the direct irradiance blocked by clouds, shape (1440, n_roofs), in [0, 1].

    A smooth AR(1) field (correlation time 20 min) is thresholded so that on average
    ``cloud_cover`` of the day is shaded; the edges are soft (logistic). Every roof sees the same
    clouds shifted by a seeded lag of up to ``max_lag_min`` minutes (clouds drifting over the
    village).
    """
    if not (0.0 <= cloud_cover <= 1.0):
        raise ValueError(f"cloud_cover must lie in [0, 1], got {cloud_cover}")
    pad = max_lag_min
    field_ = _ar1(rng, MINUTES_PER_DAY + 2 * pad, 1, 20.0)[:, 0]
    if cloud_cover <= 0.0:
        shade = np.zeros_like(field_)
    elif cloud_cover >= 1.0:
        shade = np.ones_like(field_)
    else:
        threshold = float(ndtri(1.0 - cloud_cover))
        shade = expit((field_ - threshold) / 0.15)
    lag = rng.integers(-max_lag_min, max_lag_min + 1, n_roofs)
    rows = pad + np.arange(MINUTES_PER_DAY)[:, None] + lag[None, :]
    return shade[rows]


def pv_kw(
    kwp: np.ndarray,
    date: str | pd.Timestamp,
    rng: np.random.Generator,
    cloud_cover: float,
    site: Site = DEFAULT_SITE,
) -> np.ndarray:
    """Minute PV generation (AC, >= 0) of rooftop systems, shape (1440, n), kW.

    pvlib: Ineichen clear sky (Linke turbidity climatology) and isotropic transposition onto a
    seeded roof (tilt 15..40 deg, azimuth 180 +- 60 deg); under a cloud the direct part is removed
    and the diffuse part rises by 30 %; Faiman cell temperature with an air temperature of
    ``8 + 6 * sin`` deg C over the day; -0.37 %/K; system efficiency 0.88 (wiring, soiling,
    inverter); clipped at the inverter rating = kWp.
    """
    kwp_arr = np.asarray(kwp, dtype=float)
    if kwp_arr.ndim != 1 or not np.all(np.isfinite(kwp_arr)) or np.any(kwp_arr < 0):
        raise ValueError("kwp must be a 1-D array of finite values >= 0")
    n = kwp_arr.size
    times = minute_index(date, site.tz)
    location = pvlib.location.Location(
        site.latitude_deg, site.longitude_deg, tz=site.tz, altitude=site.altitude_m
    )
    solpos = location.get_solarposition(times)
    clear = location.get_clearsky(times, model="ineichen", solar_position=solpos)
    tilt = rng.uniform(15.0, 40.0, n)[None, :]
    azimuth = (180.0 + rng.uniform(-60.0, 60.0, n))[None, :]
    poa = pvlib.irradiance.get_total_irradiance(
        tilt,
        azimuth,
        solpos["apparent_zenith"].to_numpy()[:, None],
        solpos["azimuth"].to_numpy()[:, None],
        clear["dni"].to_numpy()[:, None],
        clear["ghi"].to_numpy()[:, None],
        clear["dhi"].to_numpy()[:, None],
    )
    shade = cloud_shading(rng, cloud_cover, n)
    poa_w_m2 = poa["poa_direct"] * (1.0 - shade) + poa["poa_diffuse"] * (1.0 + 0.3 * shade)
    poa_w_m2 = np.nan_to_num(np.asarray(poa_w_m2, dtype=float), nan=0.0)
    poa_w_m2 = np.where(solpos["apparent_elevation"].to_numpy()[:, None] > 0.0, poa_w_m2, 0.0)
    poa_w_m2 = np.maximum(poa_w_m2, 0.0)
    hour = np.arange(MINUTES_PER_DAY)[:, None] / 60.0
    temp_air_c = 8.0 + 6.0 * np.sin(2.0 * np.pi * (hour - 9.0) / 24.0)
    temp_cell_c = pvlib.temperature.faiman(poa_w_m2, temp_air_c, wind_speed=2.0)
    dc_kw = kwp_arr[None, :] * poa_w_m2 / 1000.0 * (1.0 - 0.0037 * (temp_cell_c - 25.0))
    return np.clip(0.88 * dc_kw, 0.0, kwp_arr[None, :])


def build_day_profiles(
    customers: Sequence[Customer],
    bus_ids: Sequence[int] | np.ndarray,
    date: str | pd.Timestamp,
    seed: int = 0,
    cloud_cover: float | None = None,
    site: Site = DEFAULT_SITE,
) -> DayProfiles:
    """Day profiles for ``customers`` aggregated onto ``bus_ids`` (the feeder's bus order).

    ``cloud_cover`` in [0, 1] (share of the day under cloud); ``None`` draws it from the seed,
    uniform in [0, 0.5] (a day with passing clouds). Deterministic from ``seed``.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    customers = tuple(customers)
    bus_arr = np.asarray(bus_ids, dtype=int)
    position = {int(b): i for i, b in enumerate(bus_arr)}
    if len(position) != bus_arr.size:
        raise ValueError("bus_ids must be unique")
    names = [c.name for c in customers]
    if len(set(names)) != len(names):
        raise ValueError("customer names must be unique")
    for c in customers:
        if c.bus_id not in position:
            raise ValueError(f"customer {c.name!r} is at unknown bus {c.bus_id}")
    day = _parse_date(date)
    weather_ss, load_ss, pv_ss = np.random.SeedSequence(seed).spawn(3)
    if cloud_cover is None:
        cloud_cover = float(np.random.default_rng(weather_ss).uniform(0.0, 0.5))

    n_cust = len(customers)
    load = np.zeros((MINUTES_PER_DAY, n_cust))
    fractions = np.zeros(n_cust)
    load_rng = np.random.default_rng(load_ss)
    for kind in ("household", "commercial"):
        idx = np.array([i for i, c in enumerate(customers) if c.profile == kind], dtype=int)
        fractions[idx] = slp_day_fraction(day, kind) if idx.size else 0.0
        if idx.size == 0:
            continue
        counts = np.array([customers[i].n_households for i in idx])
        per_household = np.repeat(
            [customers[i].annual_kwh / customers[i].n_households for i in idx], counts
        )
        households = household_load_kw(per_household, day, load_rng, kind)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        load[:, idx] = np.add.reduceat(households, starts, axis=1)
    pv = (
        pv_kw(
            np.array([c.pv_kwp for c in customers]),
            day,
            np.random.default_rng(pv_ss),
            cloud_cover,
            site,
        )
        if n_cust
        else np.zeros((MINUTES_PER_DAY, 0))
    )

    tan_load = math.tan(math.acos(LOAD_POWER_FACTOR))
    tan_pv = math.tan(math.acos(PV_POWER_FACTOR))
    load_kvar = load * tan_load
    # customer -> bus incidence (n_cust, n_bus); a matrix product sums customers per bus
    incidence = np.zeros((n_cust, bus_arr.size))
    incidence[np.arange(n_cust), [position[c.bus_id] for c in customers]] = 1.0
    p_kw = (load - pv) @ incidence
    q_kvar = (load_kvar - pv * tan_pv) @ incidence
    return DayProfiles(
        time=minute_index(day, site.tz),
        bus_ids=bus_arr.copy(),
        p_kw=p_kw,
        q_kvar=q_kvar,
        customers=customers,
        load_kw=load,
        load_kvar=load_kvar,
        pv_kw=pv,
        seed=int(seed),
        cloud_cover=float(cloud_cover),
        slp_day_fraction=fractions,
    )
