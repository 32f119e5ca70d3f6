"""Feeder state per interval: meter readings -> per-bus uncontrollable P/Q and the slack voltage.

The device registry comes from the capacity contract (``deviceCount``/``deviceIdAt``/
``deviceOf``) and the oracle's feeder model. A device's role follows from its kind and bus:

* ``flexibility``: kind CommunityBattery or ChargingStation: gets a band; its own readings are
  kept apart (they are the flexibility's operation, not uncontrollable load);
* ``transformer``: kind Other at the feeder's slack bus: its voltage reading is the slack
  reference of the load flow;
* ``load``: kind Other at another bus of the feeder: an uncontrollable load (customer) meter;
* ``unknown``: a bus the feeder model does not have: its readings are rejected.

Rules (docs/oracle.md):

* A reading is rejected, with the reason stored, when its device is not registered or is
  ``unknown``; its timestamp is not on a minute boundary; |P| exceeds the device's rated range
  by more than ``RATED_TOLERANCE - 1`` of its largest rated |P|; |Q| exceeds ``RATED_TOLERANCE``
  times that largest rated |P|; V lies outside ``V_PHYSICAL_PU`` (a meter fault, far beyond the
  0.9..1.1 pu of EN 50160); |theta| > pi.
  A second reading of the same device and timestamp is a duplicate (the first one counts).
* Missing minute of a load or transformer meter: the meter's previous value (within the interval
  or its last reading before it), else the profile forecast (load: its bus's profile divided by
  the number of load meters at the bus; transformer: the feeder's nominal slack voltage).
  Buses with no load meter at all take their profile forecast. Every filled minute is reported.
* Bands for interval t+1 come from the state of interval t (persistence forecast, see
  ``forecast_steps``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from capacity.flexibility import Flexibility, FlexibilityKind
from gridshare.units import kw_to_w, micro_pu_to_pu, pu_to_micro_pu, var_to_kvar, w_to_kw

SECONDS_PER_MINUTE = 60
MINUTES_PER_DAY = 1440
#: Physically plausible voltage magnitude of a reading, pu (outside: a meter fault).
V_PHYSICAL_PU = (0.5, 1.5)
#: A reading's |P| may exceed its device's rated range by this factor before it is rejected.
RATED_TOLERANCE = 1.1
#: Largest |theta| of a reading, micro-rad.
THETA_LIMIT_MICRO_RAD = round(math.pi * 1e6)
KIND_NAMES = ("community_battery", "charging_station", "other")
FORECAST_MODES = ("all", "extremes", "last")


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


@dataclass(frozen=True)
class Device:
    """A registered device as the oracle sees it (powers in W, as on-chain)."""

    device_id: int
    index: int
    bus: int
    kind: str
    role: str
    p_min_rated_w: int
    p_max_rated_w: int
    meter: str
    name: str

    @property
    def rated_abs_w(self) -> int:
        return max(abs(self.p_min_rated_w), abs(self.p_max_rated_w))


@dataclass
class DeviceRegistry:
    """The capacity contract's devices, classified against the feeder (see module docstring)."""

    devices: dict[int, Device]
    slack_bus: int

    @classmethod
    def from_records(
        cls, records: Sequence[Mapping[str, Any]], feeder: Any,
        names: Mapping[int, str] | None = None,
    ) -> DeviceRegistry:
        """Build from ``{"device_id", "index", "bus", "kind" (0..2 or name), "p_min_rated_w",
        "p_max_rated_w", "meter"}`` records."""
        names = dict(names or {})
        slack_bus = int(feeder.slack.bus_id)
        buses = {int(b) for b in feeder.bus_ids.tolist()}
        devices = {}
        for rec in records:
            kind = rec["kind"]
            kind = KIND_NAMES[int(kind)] if not isinstance(kind, str) else kind
            bus = int(rec["bus"])
            if bus not in buses:
                role = "unknown"
            elif kind != "other":
                role = "flexibility"
            elif bus == slack_bus:
                role = "transformer"
            else:
                role = "load"
            device_id = int(rec["device_id"])
            devices[device_id] = Device(
                device_id=device_id, index=int(rec.get("index", len(devices))), bus=bus, kind=kind,
                role=role, p_min_rated_w=int(rec["p_min_rated_w"]),
                p_max_rated_w=int(rec["p_max_rated_w"]), meter=str(rec.get("meter", "")),
                name=names.get(device_id, f"device-{device_id}"),
            )
        return cls(devices, slack_bus)

    @classmethod
    def from_chain(cls, chain: Any, capacity: Any, feeder: Any,
                   names: Mapping[int, str] | None = None) -> DeviceRegistry:
        """Read every registered device from the capacity contract."""
        count = int(chain.call(capacity.functions.deviceCount()))
        records = []
        for index in range(count):
            device_id = int(chain.call(capacity.functions.deviceIdAt(index)))
            d = chain.call(capacity.functions.deviceOf(device_id))
            # Device struct: registered, kind, index, bus, pMinRatedW, pMaxRatedW, owner, meter
            records.append({"device_id": device_id, "kind": int(d[1]), "index": int(d[2]),
                            "bus": int(d[3]), "p_min_rated_w": int(d[4]),
                            "p_max_rated_w": int(d[5]), "meter": str(d[7])})
        return cls.from_records(records, feeder, names)

    def of_role(self, role: str) -> list[Device]:
        """Devices with ``role``, by device id."""
        return sorted((d for d in self.devices.values() if d.role == role),
                      key=lambda d: d.device_id)

    def flexibilities(self) -> list[Flexibility]:
        """The flexibilities as ``capacity`` objects (rated range in kW), by device id."""
        return [
            Flexibility(d.name, d.bus, float(w_to_kw(d.p_min_rated_w)),
                        float(w_to_kw(d.p_max_rated_w)), FlexibilityKind(d.kind))
            for d in self.of_role("flexibility")
        ]


# ----------------------------------------------------------------------------- validation
READING_FIELDS = ("device_id", "timestamp", "p_w", "q_var", "v_micro_pu", "theta_micro_rad")


def rejection_reason(reading: Mapping[str, int], registry: DeviceRegistry) -> str | None:
    """Why a reading is refused (None: it passes). Duplicates are checked by the store."""
    device = registry.devices.get(int(reading["device_id"]))
    if device is None:
        return f"unknown device {reading['device_id']}: not registered"
    if device.role == "unknown":
        return f"unknown device {device.device_id}: bus {device.bus} is not in the feeder"
    ts = int(reading["timestamp"])
    if ts % SECONDS_PER_MINUTE:
        return f"timestamp {ts} is not on a minute boundary"
    p_w, q_var = int(reading["p_w"]), int(reading["q_var"])
    lo_limit = device.p_min_rated_w - (RATED_TOLERANCE - 1) * device.rated_abs_w
    hi_limit = device.p_max_rated_w + (RATED_TOLERANCE - 1) * device.rated_abs_w
    if not lo_limit <= p_w <= hi_limit:
        return (f"P {p_w} W outside the rated range {device.p_min_rated_w}..{device.p_max_rated_w}"
                f" W (+{RATED_TOLERANCE - 1:.0%})")
    if abs(q_var) > RATED_TOLERANCE * device.rated_abs_w:
        return f"|Q| {abs(q_var)} var above {RATED_TOLERANCE} x rated {device.rated_abs_w} W"
    v_pu = float(micro_pu_to_pu(int(reading["v_micro_pu"])))
    if not V_PHYSICAL_PU[0] <= v_pu <= V_PHYSICAL_PU[1]:
        return f"V {v_pu:.6f} pu outside the physical range {V_PHYSICAL_PU[0]}..{V_PHYSICAL_PU[1]}"
    if abs(int(reading["theta_micro_rad"])) > THETA_LIMIT_MICRO_RAD:
        return f"|theta| {abs(int(reading['theta_micro_rad']))} micro-rad above pi"
    return None


def rejection_mask(records: np.ndarray, registry: DeviceRegistry) -> np.ndarray:
    """Vectorised ``rejection_reason(...) is not None`` over a structured array of readings
    (fields ``READING_FIELDS``); the same rules, without building messages."""
    ids = np.asarray(records["device_id"], dtype=np.int64)
    if ids.size == 0:
        return np.zeros(0, dtype=bool)
    known = np.array(sorted(registry.devices), dtype=np.int64)
    if known.size == 0:
        return np.ones(ids.size, dtype=bool)
    devs = [registry.devices[int(i)] for i in known]
    pos = np.clip(np.searchsorted(known, ids), 0, known.size - 1)
    found = known[pos] == ids
    unknown_role = np.array([d.role == "unknown" for d in devs])[pos]
    p_min = np.array([d.p_min_rated_w for d in devs], dtype=float)[pos]
    p_max = np.array([d.p_max_rated_w for d in devs], dtype=float)[pos]
    rated = np.array([d.rated_abs_w for d in devs], dtype=float)[pos]
    p = np.asarray(records["p_w"], dtype=float)
    q = np.abs(np.asarray(records["q_var"], dtype=float))
    v_pu = np.asarray(records["v_micro_pu"], dtype=np.int64) / 1e6
    bad = ~found | unknown_role
    bad |= np.asarray(records["timestamp"], dtype=np.int64) % SECONDS_PER_MINUTE != 0
    bad |= (p < p_min - (RATED_TOLERANCE - 1) * rated) | (p > p_max + (RATED_TOLERANCE - 1) * rated)
    bad |= q > RATED_TOLERANCE * rated
    bad |= (v_pu < V_PHYSICAL_PU[0]) | (v_pu > V_PHYSICAL_PU[1])
    bad |= np.abs(np.asarray(records["theta_micro_rad"], dtype=np.int64)) > THETA_LIMIT_MICRO_RAD
    return bad


# ----------------------------------------------------------------------------- forecast
@dataclass(frozen=True)
class ProfileForecast:
    """Day profile forecast per bus (W/var integers, (1440, n_bus)); ``day_start_s`` is the unix
    time of minute 0. Other days repeat the same profile (minute of day = offset mod 1440)."""

    p_w: np.ndarray
    q_var: np.ndarray
    day_start_s: int

    @classmethod
    def from_profiles(cls, profiles: Any) -> ProfileForecast:
        return cls(np.asarray(kw_to_w(profiles.p_kw), dtype=np.int64),
                   np.asarray(kw_to_w(profiles.q_kvar), dtype=np.int64),
                   int(profiles.time[0].timestamp()))

    def minute_rows(self, timestamps: np.ndarray) -> np.ndarray:
        return ((np.asarray(timestamps) - self.day_start_s) // SECONDS_PER_MINUTE) % MINUTES_PER_DAY


# ----------------------------------------------------------------------------- state
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


def minutes_per_interval(interval_seconds: int) -> int:
    """Minute readings per interval; ValueError unless a positive multiple of 60 s."""
    if interval_seconds <= 0 or interval_seconds % SECONDS_PER_MINUTE:
        raise ValueError(
            f"intervalSeconds must be a positive multiple of 60 (minute readings), "
            f"got {interval_seconds}"
        )
    return interval_seconds // SECONDS_PER_MINUTE


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


def build_state(
    interval: int,
    interval_seconds: int,
    registry: DeviceRegistry,
    feeder: Any,
    readings: Sequence[Mapping[str, Any]],
    previous: Mapping[int, Mapping[str, Any]],
    forecast: ProfileForecast,
) -> FeederState:
    """The state of ``interval`` from its accepted ``readings`` and each device's last reading
    before it (``previous``), missing values filled by the module's rules."""
    n_min = minutes_per_interval(interval_seconds)
    start_s = interval * interval_seconds
    timestamps = start_s + SECONDS_PER_MINUTE * np.arange(n_min, dtype=np.int64)
    bus_ids = np.asarray(feeder.bus_ids, dtype=np.int64)
    n_bus = bus_ids.size
    rows = forecast.minute_rows(timestamps)
    prof_p, prof_q = forecast.p_w[rows], forecast.q_var[rows]

    loads = registry.of_role("load")
    flexes = registry.of_role("flexibility")
    transformers = registry.of_role("transformer")
    meters_at_bus: dict[int, int] = {}
    for d in loads:
        meters_at_bus[d.bus] = meters_at_bus.get(d.bus, 0) + 1

    per_device: dict[int, dict[str, np.ndarray]] = {}
    for d in (*loads, *flexes, *transformers):
        per_device[d.device_id] = {
            "seen": np.zeros(n_min, dtype=bool), "p": np.zeros(n_min), "q": np.zeros(n_min),
            "v": np.zeros(n_min),
        }
    n_readings = 0
    for r in readings:
        slot = per_device.get(int(r["device_id"]))
        k = (int(r["timestamp"]) - start_s) // SECONDS_PER_MINUTE
        if slot is None or not 0 <= k < n_min:
            continue
        slot["seen"][k] = True
        slot["p"][k], slot["q"][k], slot["v"][k] = r["p_w"], r["q_var"], r["v_micro_pu"]
        n_readings += 1

    filled: dict[int, dict[str, int]] = {}
    p_w = np.zeros((n_min, n_bus))
    q_var = np.zeros((n_min, n_bus))
    for d in loads:
        slot, prev = per_device[d.device_id], previous.get(d.device_id)
        col = feeder.bus_position(d.bus)
        share = meters_at_bus[d.bus]
        p, nl, nf = _fill(slot["p"], slot["seen"], None if prev is None else prev["p_w"],
                          prof_p[:, col] / share)
        q, _, _ = _fill(slot["q"], slot["seen"], None if prev is None else prev["q_var"],
                        prof_q[:, col] / share)
        if nl or nf:
            filled[d.device_id] = {"last": nl, "forecast": nf}
        p_w[:, col] += p
        q_var[:, col] += q
    unmetered = [int(b) for b in bus_ids if int(b) not in meters_at_bus
                 and int(b) != registry.slack_bus
                 and np.any(forecast.p_w[:, feeder.bus_position(int(b))] != 0)]
    for b in unmetered:
        col = feeder.bus_position(b)
        p_w[:, col] = prof_p[:, col]
        q_var[:, col] = prof_q[:, col]

    v_nominal = float(pu_to_micro_pu(abs(feeder.slack.vm_pu)))
    if transformers:
        d = transformers[0]
        slot, prev = per_device[d.device_id], previous.get(d.device_id)
        v, nl, nf = _fill(slot["v"], slot["seen"], None if prev is None else prev["v_micro_pu"],
                          np.full(n_min, v_nominal))
        if nl or nf:
            filled[d.device_id] = {"last": nl, "forecast": nf}
    else:
        v = np.full(n_min, v_nominal)

    flex_p = np.zeros((n_min, len(flexes)))
    flex_seen = np.zeros((n_min, len(flexes)), dtype=bool)
    for j, d in enumerate(flexes):
        flex_p[:, j] = per_device[d.device_id]["p"]
        flex_seen[:, j] = per_device[d.device_id]["seen"]

    return FeederState(
        interval=interval, timestamps=timestamps, bus_ids=bus_ids,
        p_w=np.rint(p_w).astype(np.int64), q_var=np.rint(q_var).astype(np.int64),
        v_slack_micro_pu=np.rint(v).astype(np.int64),
        flex_ids=[d.device_id for d in flexes], flex_p_w=flex_p.astype(np.int64),
        flex_seen=flex_seen, n_readings=n_readings, filled=filled, unmetered_buses=unmetered,
    )


def forecast_steps(state: FeederState, mode: str) -> np.ndarray:
    """Minutes of ``state`` used as OCM steps for the next interval (persistence forecast).

    ``all``: every minute; ``extremes``: the minutes of the largest and the smallest total
    uncontrollable consumption and the last minute (sorted, without repeats); ``last``: the last
    minute only. The bands of the steps are intersected.
    """
    if mode not in FORECAST_MODES:
        raise ValueError(f"unknown forecast mode {mode!r}; choose one of {FORECAST_MODES}")
    n = state.p_w.shape[0]
    if mode == "all":
        return np.arange(n)
    if mode == "last":
        return np.array([n - 1])
    total = state.p_w.sum(axis=1)
    return np.unique([int(np.argmax(total)), int(np.argmin(total)), n - 1])


def intersect_bands(p_min_kw: np.ndarray, p_max_kw: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                          np.ndarray]:
    """One band per flexibility valid at every step: (lo, hi, empty) from (T, n_flex) bands.

    lo = max over steps of P_min, hi = min over steps of P_max: a box inside every step's
    certified box. Where they cross for any device (``empty``), no box lies inside all steps'
    boxes, and a point made up between them would be certified by no step; the whole band of the
    last step (the newest minute, certified as it stands) is published instead.
    """
    p_min_kw = np.atleast_2d(np.asarray(p_min_kw, dtype=float))
    p_max_kw = np.atleast_2d(np.asarray(p_max_kw, dtype=float))
    lo = np.max(p_min_kw, axis=0)
    hi = np.min(p_max_kw, axis=0)
    empty = lo > hi
    if empty.any():
        return p_min_kw[-1].copy(), p_max_kw[-1].copy(), empty
    return lo, hi, empty
