"""The community battery as the oracle sees it: its charge from its meter, the reserve the next
hours need, and the powers both allow in the interval a band is for (issue 16).

* **State of charge** (``soc_after_wh``): the storage model of the deployed battery
  (``capacity.storage.default_storage`` of its rated power, as the market's
  ``default_battery_params``) run over its meter's energy per interval from the deployment's
  interval on: ``E_i = round(sum of the minute powers x 60 s / 3600)`` Wh, the market's
  ``E(P)`` for a constant power (missing minutes count 0 W), clamped to the limits after each
  interval, as the market does.
* **Needed discharge** per previous day and interval of the day
  (``needed_discharge_profile_kw``): on each day of the ramp history
  (``oracle.forecast.RampHistory``), the interval's minute with the lowest bus voltage and the
  least battery injection that keeps every bus at ``v_low`` then
  (``capacity.reserve.needed_discharge_kw``), twice: the grid's own need (every flexibility at
  rest) and the need with every charging station drawing its guaranteed minimum (the band
  policy's 4.2 kW, ``capacity.ocm.policy``): what honouring the guarantee takes. A battery
  that follows the feeder (``OcmSettings.battery_follows``) gives each minute only that
  minute's need: its need per interval is the mean of its minutes' needs; and as it funds the
  stations' share above their guarantee (``BandPolicy.battery_shares``), the stations count at
  their rating (``oracle.service.battery_inputs``).
* **Reserves** (``reserve_wh``): what the battery must still hold at the end of interval ``k``:
  ``soc_min`` plus the cell energy (``ceil(E / eta_d)``) of the needed discharge of intervals
  ``k+1 .. k+H`` (``H``: ``OcmSettings.battery_reserve_h``) on the previous day that needed the
  most then, at most ``soc_max``: ``reserve_wh`` with the stations' guarantee, ``reserve_grid_wh``
  the grid's own. The oracle writes ``reserve_wh`` with the bands
  (``GridCapacity.writeBandsWithReserve``); the market discharges the battery for its members
  no further than keeps it (``market.battery.dispatch``).
* **Limits** (``BatteryLimits``) for a band, in the order a band is sought with them
  (``TIERS``): restoring the reserve (below it: at least the charging that restores it evenly
  before the first needed discharge, ``fill_power_w``), keeping it, keeping the grid's own
  reserve (the guarantee spends what was kept for it: a full battery whose reserve is capped at
  ``soc_max`` still honours it), and down to ``soc_min`` (no guarantee: exactly the discharge
  the grid needs).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from capacity.storage import PPM, BatteryStorage, default_storage, div_round_half_away
from gridshare.units import micro_pu_to_pu, var_to_kvar, w_to_kw
from oracle.forecast import MINUTES_PER_DAY
from oracle.registry import SECONDS_PER_MINUTE, Device

#: ``power_sums(device_id, start_s, end_s, interval_s)`` -> {interval: sum of P in W}.
PowerSums = Callable[[int, int, int, int], Mapping[int, int]]


def storage_of(device: Device) -> BatteryStorage:
    """The storage of the registered battery ``device`` (``default_storage`` of its rating)."""
    return default_storage(max(abs(device.p_min_rated_w), abs(device.p_max_rated_w)))


def soc_after_wh(storage: BatteryStorage, device_id: int, power_sums: PowerSums,
                 first_interval: int, interval: int, interval_s: int) -> int:
    """State of charge (Wh) at the end of ``interval`` from the battery meter's readings of
    ``first_interval .. interval`` (see module docstring)."""
    sums = power_sums(device_id, first_interval * interval_s, (interval + 1) * interval_s,
                      interval_s)
    return storage.replay_energies_soc_wh(
        div_round_half_away(int(sums.get(k, 0)) * SECONDS_PER_MINUTE, 3600)
        for k in range(first_interval, interval + 1))


@functools.lru_cache(maxsize=8)
def needed_discharge_profile_kw(feeder_name: str, seed: int, history_days: int,
                                battery_bus: int, p_max_w: int, v_low_micro_pu: int,
                                interval_s: int,
                                station_load_w: tuple[tuple[int, int], ...] = (),
                                follows: bool = False) -> np.ndarray:
    """Needed discharge (kW) per previous day and interval of the day, (D, 86400 / interval_s),
    with ``station_load_w`` ((bus, W) pairs) added to the previous days' load (see module
    docstring); ``follows``: a battery that follows the feeder, the mean of every minute's
    need, not the interval's worst minute's. Computed once per process and settings."""
    from capacity.helm import solve
    from capacity.reserve import needed_discharge_kw
    from oracle.state import feeder_model, profile_forecast

    feeder = feeder_model(feeder_name)
    history = profile_forecast(feeder_name, seed, history_days).history
    if history is None:
        raise ValueError("the battery reserve needs a ramp history (history_days >= 1)")

    n_min = interval_s // SECONDS_PER_MINUTE
    n_per_day = MINUTES_PER_DAY // n_min
    p_kw = np.array(w_to_kw(history.p_w), dtype=float)  # (D, 1440, n_bus)
    for bus, load_w in station_load_w:
        p_kw[:, :, feeder.bus_position(int(bus))] += float(w_to_kw(load_w))
    q_kvar = np.asarray(var_to_kvar(history.q_var), dtype=float)
    n_bus = p_kw.shape[2]
    v_slack_pu = float(abs(feeder.slack.vm_pu))
    v_low_pu, p_max_kw = float(micro_pu_to_pu(v_low_micro_pu)), float(w_to_kw(p_max_w))
    if follows:
        needed = needed_discharge_kw(feeder, battery_bus, p_kw.reshape(-1, n_bus),
                                     q_kvar.reshape(-1, n_bus), v_slack_pu, v_low_pu, p_max_kw)
        return needed.reshape(p_kw.shape[0], n_per_day, n_min).mean(axis=2)
    v_min = np.abs(solve(feeder, p_kw=p_kw.reshape(-1, n_bus), q_kvar=q_kvar.reshape(-1, n_bus),
                         v_slack_pu=v_slack_pu).v_pu).min(axis=1)
    v_min = np.where(np.isfinite(v_min), v_min, -np.inf).reshape(-1, n_per_day, n_min)
    worst = np.argmin(v_min, axis=2)  # (D, n_per_day): minute of the interval
    days = np.arange(p_kw.shape[0])[:, None]
    rows = np.arange(n_per_day)[None, :] * n_min + worst
    needed = needed_discharge_kw(
        feeder, battery_bus, p_kw[days, rows].reshape(-1, n_bus),
        q_kvar[days, rows].reshape(-1, n_bus), v_slack_pu, v_low_pu, p_max_kw)
    return needed.reshape(-1, n_per_day)


def reserve_wh(storage: BatteryStorage, needed_kw: np.ndarray, interval_of_day: int,
               horizon_intervals: int, interval_s: int) -> tuple[int, int | None]:
    """The reserve (Wh) at the end of the interval at ``interval_of_day``: ``soc_min`` plus the
    cell energy of the next ``horizon_intervals``' needed discharge (wrapping at midnight) on
    the day of ``needed_kw`` (D, n_per_day) that needed the most, at most ``soc_max``; and in
    how many intervals the first discharge is needed on any day (None: none in the horizon)."""
    needed_kw = np.atleast_2d(needed_kw)
    rows = (interval_of_day + 1 + np.arange(horizon_intervals)) % needed_kw.shape[1]
    energy_wh = float(needed_kw[:, rows].sum(axis=1).max()) * 1000.0 * interval_s / 3600.0
    cells_wh = math.ceil(energy_wh * PPM / storage.discharge_efficiency_ppm)
    needs = np.flatnonzero(needed_kw[:, rows].max(axis=0) > 0)
    first = int(needs[0]) + 1 if needs.size else None
    return min(storage.soc_min_wh + cells_wh, storage.soc_max_wh), first


def fill_power_w(storage: BatteryStorage, soc_wh: int, reserve: int, intervals: int | None,
                 interval_s: int) -> int:
    """Charging power (W, >= 0) that brings ``soc_wh`` up to ``reserve`` evenly over the
    ``intervals`` before the first needed discharge (0 at or above the reserve)."""
    if soc_wh >= reserve or not intervals:
        return 0
    ac_wh = (reserve - soc_wh) * PPM / storage.charge_efficiency_ppm
    return math.ceil(ac_wh * 3600 / (intervals * interval_s))


@dataclass(frozen=True)
class BatteryLimits:
    """The battery's state for one band (integers, W and Wh): its state of charge before the
    interval, the reserves at its end (``reserve_wh`` with the stations' guarantee,
    ``reserve_grid_wh`` the grid's own), and the lowest powers the charge allows, in the order a
    band is sought with them (``TIERS``): restoring the reserve (``p_min_fill_w``: below it, the
    charging ``fill_power_w`` that restores it in time, as far as the charge room allows),
    keeping it (``p_min_keep_w``), keeping the grid's own (``p_min_grid_w``), down to ``soc_min``
    (``p_min_soc_w``); and the highest, up to ``soc_max`` (``p_max_soc_w``)."""

    device_id: int
    soc_wh: int
    reserve_wh: int
    reserve_grid_wh: int
    p_min_fill_w: int
    p_min_keep_w: int
    p_min_grid_w: int
    p_min_soc_w: int
    p_max_soc_w: int

    @classmethod
    def of(cls, storage: BatteryStorage, device_id: int, soc_wh: int, reserve: int,
           interval_s: int, fill_intervals: int | None = None,
           reserve_grid: int | None = None) -> BatteryLimits:
        """``reserve_grid`` None: the same as ``reserve`` (no station guarantee to fund)."""
        reserve_grid = reserve if reserve_grid is None else min(reserve_grid, reserve)
        keep_lo, hi = storage.power_range_w(soc_wh, interval_s, floor_wh=reserve)
        grid_lo, _ = storage.power_range_w(soc_wh, interval_s, floor_wh=reserve_grid)
        soc_lo, _ = storage.power_range_w(soc_wh, interval_s)
        fill = min(fill_power_w(storage, soc_wh, reserve, fill_intervals, interval_s), hi)
        return cls(int(device_id), int(soc_wh), int(reserve), int(reserve_grid),
                   fill if fill > 0 else keep_lo, keep_lo, grid_lo, soc_lo, hi)

    def as_inputs(self) -> dict[str, int]:
        return asdict(self)


#: The battery's lower bounds a band is sought with, in order (``BatteryLimits``).
TIERS = ("fill", "keep", "grid", "soc")
#: The tiers below the reserve: the band gives exactly the discharge needed, none to the market.
BELOW_RESERVE_TIERS = TIERS[2:]


def limited_devices(devices: list[list[Any]], battery: Mapping[str, int], tier: str
                    ) -> list[list[Any]]:
    """The inputs' ``devices`` rows with the battery's rated range narrowed to what its charge
    allows at ``tier`` (``TIERS``: restoring the reserve, keeping it, keeping the grid's own,
    down to ``soc_min``); a fill above the rating is the rating."""
    lo = battery[f"p_min_{tier}_w"]
    out = []
    for d in devices:
        if int(d[0]) == int(battery["device_id"]):
            hi = min(int(d[3]), int(battery["p_max_soc_w"]))
            d = [d[0], d[1], min(max(int(d[2]), int(lo)), hi), hi, d[4]]
        out.append(d)
    return out
