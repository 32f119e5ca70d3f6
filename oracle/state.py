"""Feeder state per interval: meter readings -> per-bus uncontrollable P/Q and the slack voltage.

Which device is a load, transformer or flexibility meter, and which readings are rejected:
``oracle.registry``. The profile forecast and the persistence forecast of the bands:
``oracle.forecast``. Rules (docs/oracle.md):

* Missing minute of a load or transformer meter: the meter's previous value (within the interval
  or its last reading before it), else the profile forecast (load: its bus's profile divided by
  the number of load meters at the bus; transformer: the feeder's nominal slack voltage).
  Buses with no load meter at all take their profile forecast. Every filled minute is reported.
* Bands for interval t+1 come from the state of interval t (persistence forecast, see
  ``oracle.forecast.forecast_steps``).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gridshare.units import micro_pu_to_pu, pu_to_micro_pu, var_to_kvar, w_to_kw
from oracle.forecast import ProfileForecast
from oracle.registry import SECONDS_PER_MINUTE, Device, DeviceRegistry

#: Per device id: its readings on the interval's minutes ("seen" bool, "p" W, "q" var, "v"
#: micro-pu; float arrays of the interval's M minutes).
Slots = dict[int, dict[str, np.ndarray]]


@functools.lru_cache(maxsize=8)
def feeder_model(name: str) -> Any:
    """The built-in feeder ``name`` (``capacity.feeders.load_feeder``), built once per process
    (a ``Feeder`` is immutable; building the pandapower net is slow)."""
    from capacity.feeders import load_feeder

    return load_feeder(name)


@functools.lru_cache(maxsize=8)
def feeder_profiles(name: str, seed: int) -> Any:
    """``capacity.feeders.day_profiles(name, seed)``, computed once per process."""
    from capacity.feeders import day_profiles

    return day_profiles(name, seed=seed)


@functools.lru_cache(maxsize=4)
def profile_forecast(name: str, seed: int, history_days: int = 0) -> ProfileForecast:
    """The oracle's forecast of feeder ``name``: the day profiles of ``seed`` and, for the
    ``ramps`` forecast, ``history_days`` previous days (the profiles of seeds ``seed + 1`` to
    ``seed + history_days``: other days of the same season, never the day itself)."""
    if history_days < 0:
        raise ValueError(f"history_days must be >= 0, got {history_days}")
    days = [feeder_profiles.__wrapped__(name, seed + 1 + d)  # uncached: kept only as history
            for d in range(history_days)]
    return ProfileForecast.from_profiles(feeder_profiles(name, seed), days)


@dataclass
class FeederState:
    """What the oracle knows of one interval, minute by minute (integers in on-chain units).

    ``p_w``/``q_var`` (M, n_bus): uncontrollable net consumption per bus; ``v_slack_micro_pu``
    (M,); ``flex_p_w`` (M, n_flex): the flexibilities' own readings (NaN-free: missing = 0 with
    ``flex_seen`` False); ``filled``: per device id, how its missing minutes were filled
    (``{"last": n, "forecast": n}``); ``unmetered_buses``: buses on the profile forecast.
    """

    interval: int
    timestamps: np.ndarray
    bus_ids: np.ndarray
    p_w: np.ndarray
    q_var: np.ndarray
    v_slack_micro_pu: np.ndarray
    flex_ids: list[int]
    flex_p_w: np.ndarray
    flex_seen: np.ndarray
    n_readings: int
    filled: dict[int, dict[str, int]] = field(default_factory=dict)
    unmetered_buses: list[int] = field(default_factory=list)

    @property
    def n_missing(self) -> int:
        """Number of (device, minute) values that were filled in."""
        return sum(sum(v.values()) for v in self.filled.values())

    @property
    def p_kw(self) -> np.ndarray:
        return np.asarray(w_to_kw(self.p_w), dtype=float)

    @property
    def q_kvar(self) -> np.ndarray:
        return np.asarray(var_to_kvar(self.q_var), dtype=float)

    @property
    def v_slack_pu(self) -> np.ndarray:
        return np.asarray(micro_pu_to_pu(self.v_slack_micro_pu), dtype=float)


def minutes_per_interval(interval_s: int) -> int:
    """Minute readings per interval; ValueError unless a positive multiple of 60 s."""
    if interval_s <= 0 or interval_s % SECONDS_PER_MINUTE:
        raise ValueError(
            f"intervalSeconds must be a positive multiple of 60 (minute readings), "
            f"got {interval_s}"
        )
    return interval_s // SECONDS_PER_MINUTE


def _fill(values: np.ndarray, seen: np.ndarray, previous: float | None,
          fallback: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Fill unseen entries of ``values`` (M,) by carrying the last value forward (starting from
    ``previous``), else ``fallback``; returns (filled, n_last, n_forecast)."""
    if seen.all():
        return values, 0, 0
    idx = np.where(seen, np.arange(seen.size), -1)
    np.maximum.accumulate(idx, out=idx)
    out = np.where(idx >= 0, values[np.maximum(idx, 0)], np.nan)
    n_last = int(np.count_nonzero(~seen & (idx >= 0)))
    head = idx < 0
    if previous is not None:
        out[head] = previous
        n_last += int(np.count_nonzero(head))
        n_forecast = 0
    else:
        out[head] = fallback[head]
        n_forecast = int(np.count_nonzero(head))
    return out, n_last, n_forecast


def _minute_slots(readings: Sequence[Mapping[str, Any]], devices: Sequence[Device],
                  start_s: int, n_min: int) -> tuple[Slots, int]:
    """The readings of ``devices`` on the ``n_min`` minutes from ``start_s`` (unix s), per
    device id (see ``Slots``); and how many readings were placed (others are ignored)."""
    slots: Slots = {
        d.device_id: {"seen": np.zeros(n_min, dtype=bool), "p": np.zeros(n_min),
                      "q": np.zeros(n_min), "v": np.zeros(n_min)}
        for d in devices
    }
    n_readings = 0
    for r in readings:
        slot = slots.get(int(r["device_id"]))
        k = (int(r["timestamp"]) - start_s) // SECONDS_PER_MINUTE
        if slot is None or not 0 <= k < n_min:
            continue
        slot["seen"][k] = True
        slot["p"][k], slot["q"][k], slot["v"][k] = r["p_w"], r["q_var"], r["v_micro_pu"]
        n_readings += 1
    return slots, n_readings


def _previous_value(previous: Mapping[int, Mapping[str, Any]], device_id: int,
                    key: str) -> float | None:
    """Field ``key`` of the device's last reading before the interval (None: there is none)."""
    prev = previous.get(device_id)
    return None if prev is None else prev[key]


def _uncontrollable_power(
    loads: Sequence[Device], slots: Slots, previous: Mapping[int, Mapping[str, Any]],
    feeder: Any, prof_p: np.ndarray, prof_q: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, dict[int, dict[str, int]]]:
    """Per-bus uncontrollable P (W) and Q (var), (M, n_bus) floats, summed over the load meters
    with missing minutes filled (``prof_p``/``prof_q``: the profile forecast of the minutes);
    and per load meter with filled minutes its ``{"last": n, "forecast": n}``."""
    meters_at_bus = Counter(d.bus for d in loads)
    p_w = np.zeros((prof_p.shape[0], feeder.bus_ids.size))
    q_var = np.zeros_like(p_w)
    filled: dict[int, dict[str, int]] = {}
    for d in loads:
        slot = slots[d.device_id]
        col = feeder.bus_position(d.bus)
        share = meters_at_bus[d.bus]
        p, nl, nf = _fill(slot["p"], slot["seen"], _previous_value(previous, d.device_id, "p_w"),
                          prof_p[:, col] / share)
        q, _, _ = _fill(slot["q"], slot["seen"], _previous_value(previous, d.device_id, "q_var"),
                        prof_q[:, col] / share)
        if nl or nf:
            filled[d.device_id] = {"last": nl, "forecast": nf}
        p_w[:, col] += p
        q_var[:, col] += q
    return p_w, q_var, filled


def _unmetered_buses(bus_ids: np.ndarray, loads: Sequence[Device], slack_bus: int,
                     forecast: ProfileForecast, feeder: Any) -> list[int]:
    """Buses without a load meter (slack excluded) whose profile forecast draws power."""
    metered = {d.bus for d in loads}
    return [int(b) for b in bus_ids if int(b) not in metered and int(b) != slack_bus
            and np.any(forecast.p_w[:, feeder.bus_position(int(b))] != 0)]


def _slack_voltage(transformers: Sequence[Device], slots: Slots,
                   previous: Mapping[int, Mapping[str, Any]], feeder: Any, n_min: int
                   ) -> tuple[np.ndarray, dict[int, dict[str, int]]]:
    """Slack voltage per minute (micro-pu, floats): the first transformer meter's readings,
    missing minutes filled, else the feeder's nominal voltage; and that meter's fill counts."""
    v_nominal = np.full(n_min, float(pu_to_micro_pu(abs(feeder.slack.vm_pu))))
    if not transformers:
        return v_nominal, {}
    d = transformers[0]
    slot = slots[d.device_id]
    v, nl, nf = _fill(slot["v"], slot["seen"],
                      _previous_value(previous, d.device_id, "v_micro_pu"), v_nominal)
    return v, ({d.device_id: {"last": nl, "forecast": nf}} if nl or nf else {})


def _flexibility_readings(flexes: Sequence[Device], slots: Slots, n_min: int
                          ) -> tuple[np.ndarray, np.ndarray]:
    """The flexibilities' own readings: P (W, int, 0 where missing) and seen, (M, n_flex)."""
    flex_p = np.zeros((n_min, len(flexes)))
    flex_seen = np.zeros((n_min, len(flexes)), dtype=bool)
    for j, d in enumerate(flexes):
        flex_p[:, j] = slots[d.device_id]["p"]
        flex_seen[:, j] = slots[d.device_id]["seen"]
    return flex_p.astype(np.int64), flex_seen


def build_state(
    interval: int,
    interval_s: int,
    registry: DeviceRegistry,
    feeder: Any,
    readings: Sequence[Mapping[str, Any]],
    previous: Mapping[int, Mapping[str, Any]],
    forecast: ProfileForecast,
) -> FeederState:
    """The state of ``interval`` from its accepted ``readings`` and each device's last reading
    before it (``previous``), missing values filled by the module's rules."""
    n_min = minutes_per_interval(interval_s)
    start_s = interval * interval_s
    timestamps = start_s + SECONDS_PER_MINUTE * np.arange(n_min, dtype=np.int64)
    bus_ids = np.asarray(feeder.bus_ids, dtype=np.int64)
    rows = forecast.minute_rows(timestamps)
    prof_p, prof_q = forecast.p_w[rows], forecast.q_var[rows]
    loads = registry.of_role("load")
    flexes = registry.of_role("flexibility")
    transformers = registry.of_role("transformer")
    slots, n_readings = _minute_slots(readings, (*loads, *flexes, *transformers), start_s, n_min)
    p_w, q_var, filled = _uncontrollable_power(loads, slots, previous, feeder, prof_p, prof_q)
    unmetered = _unmetered_buses(bus_ids, loads, registry.slack_bus, forecast, feeder)
    cols = [feeder.bus_position(b) for b in unmetered]
    p_w[:, cols] = prof_p[:, cols]
    q_var[:, cols] = prof_q[:, cols]
    v, v_filled = _slack_voltage(transformers, slots, previous, feeder, n_min)
    flex_p_w, flex_seen = _flexibility_readings(flexes, slots, n_min)
    return FeederState(
        interval=interval, timestamps=timestamps, bus_ids=bus_ids,
        p_w=np.rint(p_w).astype(np.int64), q_var=np.rint(q_var).astype(np.int64),
        v_slack_micro_pu=np.rint(v).astype(np.int64),
        flex_ids=[d.device_id for d in flexes], flex_p_w=flex_p_w, flex_seen=flex_seen,
        n_readings=n_readings, filled={**filled, **v_filled}, unmetered_buses=unmetered,
    )
