"""The device registry and the rejection rules of meter readings.

The device registry comes from the capacity contract (``deviceCount``/``deviceIdAt``/
``deviceOf``) and the oracle's feeder model. A device's role follows from its kind and bus:

* ``flexibility``: kind CommunityBattery or ChargingStation: gets a band; its own readings are
  kept apart (they are the flexibility's operation, not uncontrollable load);
* ``transformer``: kind Other at the feeder's slack bus: its voltage reading is the slack
  reference of the load flow;
* ``load``: kind Other at another bus of the feeder: an uncontrollable load (customer) meter;
* ``unknown``: a bus the feeder model does not have: its readings are rejected.

Plausibility rules (docs/oracle.md "Rejected readings"), one code per rule (``RULES``): a
reading is rejected, with its rule and reason stored and counted, when

* ``unknown_device``: its device is not registered or is ``unknown``;
* ``minute``: its timestamp is not on a minute boundary;
* ``window``: the minute it describes (``[t, t + 60)``) ends more than ``ReadingWindow.max_age_s``
  before, or more than ``max_ahead_s`` after, the time of the block that carries it;
* ``meter``: the event's meter is not the device's meter in the registry;
* ``p``: P lies outside the device's rated range widened by ``RATED_TOLERANCE - 1`` of its
  largest rated |P|;
* ``q``: |Q| exceeds ``RATED_TOLERANCE`` times that largest rated |P|;
* ``v``: V lies outside ``V_SLACK_PU`` for the transformer meter (EN 50160's supply voltage band:
  the slack voltage is an OCM input, and a false one moves every band) or outside
  ``V_METER_PU`` for any other meter;
* ``angle``: theta is more than ``ANGLE_TOLERANCE_MICRO_RAD`` from its bus's no-load angle (the
  transformer's phase shift; loaded LV feeders stay within a few degrees of it);
* ``duplicate``: a second reading of the same device and timestamp (the first one counts;
  checked by the ingestion against the store).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from capacity.flexibility import Flexibility, FlexibilityKind
from gridshare.units import micro_pu_to_pu, rad_to_micro_rad, w_to_kw

SECONDS_PER_MINUTE = 60
#: Plausible voltage magnitude of the transformer (slack) meter, pu: EN 50160's +-10 %.
V_SLACK_PU = (0.90, 1.10)
#: Plausible voltage magnitude of any other meter, pu (an LV feeder that still operates).
V_METER_PU = (0.80, 1.20)
#: A reading's |P| may exceed its device's rated range by this factor before it is rejected.
RATED_TOLERANCE = 1.1
#: Largest distance of a reading's voltage angle from its bus's no-load angle, micro-rad (20 deg).
ANGLE_TOLERANCE_MICRO_RAD = 349_066
KIND_NAMES = ("community_battery", "charging_station", "other")
READING_FIELDS = ("device_id", "timestamp", "p_w", "q_var", "v_micro_pu", "theta_micro_rad")
#: Rejection rules, in the order they are checked; a rejected reading counts under the first
#: rule it breaks (code = position + 1; 0 = accepted).
RULES = ("unknown_device", "minute", "window", "meter", "p", "q", "v", "angle", "duplicate")


def unpack_records(packed: bytes, dtype: np.dtype, what: str) -> np.ndarray:
    """The fixed-size big-endian records of an event's ``packed`` blob as a structured array of
    ``dtype`` (``what`` names them in the error of a blob that is empty or cut)."""
    packed = bytes(packed)
    if len(packed) == 0 or len(packed) % dtype.itemsize:
        raise ValueError(f"{what} blob of {len(packed)} bytes is not a multiple of "
                         f"{dtype.itemsize}")
    return np.frombuffer(packed, dtype=dtype)


@dataclass(frozen=True)
class ReadingWindow:
    """How far the minute a reading describes may end from its block's time (s): at most
    ``max_age_s`` before it (a head-end posting late) and ``max_ahead_s`` after it (clock skew)."""

    max_age_s: int = 3600
    max_ahead_s: int = 60

    def __post_init__(self) -> None:
        if self.max_age_s < 0 or self.max_ahead_s < 0:
            raise ValueError(f"reading window limits must be >= 0, got {self}")


DEFAULT_WINDOW = ReadingWindow()


@dataclass(frozen=True)
class Device:
    """A registered device as the oracle sees it (powers in W, as on-chain; the bus's no-load
    voltage angle in micro-rad)."""

    device_id: int
    index: int
    bus: int
    kind: str
    role: str
    p_min_rated_w: int
    p_max_rated_w: int
    meter: str
    name: str
    angle_micro_rad: int = 0

    @property
    def rated_abs_w(self) -> int:
        return max(abs(self.p_min_rated_w), abs(self.p_max_rated_w))

    @property
    def v_limits_pu(self) -> tuple[float, float]:
        return V_SLACK_PU if self.role == "transformer" else V_METER_PU


@functools.lru_cache(maxsize=8)
def bus_angles_micro_rad(feeder: Any) -> dict[int, int]:
    """Per bus id, the voltage angle of the unloaded feeder (micro-rad): the phase shift of the
    transformers between the slack and the bus (one HELM solve, cached per feeder). Solved on a
    copy: a solve leaves state in the feeder's cache that other callers' results depend on."""
    from capacity.helm import solve

    zeros = np.zeros(feeder.bus_ids.size)
    v = solve(dataclasses.replace(feeder, _cache={}), p_kw=zeros, q_kvar=zeros).v_pu[0]
    return {int(b): int(rad_to_micro_rad(np.angle(x)))
            for b, x in zip(feeder.bus_ids.tolist(), v, strict=True)}


def _role(kind: str, bus: int, slack_bus: int, buses: Mapping[int, int]) -> str:
    """A device's role from its kind and bus (see the module docstring)."""
    if bus not in buses:
        return "unknown"
    if kind != "other":
        return "flexibility"
    return "transformer" if bus == slack_bus else "load"


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
        angles = bus_angles_micro_rad(feeder)
        devices = {}
        for rec in records:
            kind = rec["kind"]
            kind = KIND_NAMES[int(kind)] if not isinstance(kind, str) else kind
            bus = int(rec["bus"])
            device_id = int(rec["device_id"])
            devices[device_id] = Device(
                device_id=device_id, index=int(rec.get("index", len(devices))), bus=bus, kind=kind,
                role=_role(kind, bus, slack_bus, angles),
                p_min_rated_w=int(rec["p_min_rated_w"]), p_max_rated_w=int(rec["p_max_rated_w"]),
                meter=str(rec.get("meter", "")), name=names.get(device_id, f"device-{device_id}"),
                angle_micro_rad=angles.get(bus, 0),
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




def rejection(reading: Mapping[str, int], registry: DeviceRegistry, *,
              block_time_s: int | None = None, meter: str | None = None,
              window: ReadingWindow = DEFAULT_WINDOW) -> tuple[str, str] | None:
    """(rule, reason) of the first plausibility rule a reading breaks, None when it passes.

    ``block_time_s``/``meter``: the time of the block and the meter of the event that carried
    it (None: that rule is not checked). Duplicates are checked by the ingestion.
    """
    device = registry.devices.get(int(reading["device_id"]))
    if device is None:
        return "unknown_device", f"unknown device {reading['device_id']}: not registered"
    if device.role == "unknown":
        return "unknown_device", (f"unknown device {device.device_id}: bus {device.bus} is not "
                                  "in the feeder")
    ts = int(reading["timestamp"])
    if ts % SECONDS_PER_MINUTE:
        return "minute", f"timestamp {ts} is not on a minute boundary"
    if block_time_s is not None:
        late_s = block_time_s - (ts + SECONDS_PER_MINUTE)
        if late_s > window.max_age_s or -late_s > window.max_ahead_s:
            side = "before" if late_s > 0 else "after"
            return "window", (f"minute {ts} ends {abs(late_s)} s {side} its block's time "
                              f"{block_time_s} (window: {window.max_age_s} s before, "
                              f"{window.max_ahead_s} s after)")
    if meter is not None and device.meter and meter.lower() != device.meter.lower():
        return "meter", f"posted by {meter}, but the device's meter is {device.meter}"
    return _quantity_rejection(reading, device)


def _quantity_rejection(reading: Mapping[str, int], device: Device) -> tuple[str, str] | None:
    """(rule, reason) of the first implausible quantity (P, Q, V, angle) of a reading."""
    p_w, q_var = int(reading["p_w"]), int(reading["q_var"])
    lo_limit = device.p_min_rated_w - (RATED_TOLERANCE - 1) * device.rated_abs_w
    hi_limit = device.p_max_rated_w + (RATED_TOLERANCE - 1) * device.rated_abs_w
    if not lo_limit <= p_w <= hi_limit:
        return "p", (f"P {p_w} W outside the rated range {device.p_min_rated_w}.."
                     f"{device.p_max_rated_w} W (+{RATED_TOLERANCE - 1:.0%})")
    if abs(q_var) > RATED_TOLERANCE * device.rated_abs_w:
        return "q", f"|Q| {abs(q_var)} var above {RATED_TOLERANCE} x rated {device.rated_abs_w} W"
    v_pu = float(micro_pu_to_pu(int(reading["v_micro_pu"])))
    v_lo, v_hi = device.v_limits_pu
    if not v_lo <= v_pu <= v_hi:
        return "v", f"V {v_pu:.6f} pu outside the plausible range {v_lo}..{v_hi} pu ({device.role})"
    off = int(reading["theta_micro_rad"]) - device.angle_micro_rad
    if abs(off) > ANGLE_TOLERANCE_MICRO_RAD:
        return "angle", (f"theta {int(reading['theta_micro_rad'])} micro-rad is {abs(off)} from "
                         f"its bus's no-load angle {device.angle_micro_rad} (limit "
                         f"{ANGLE_TOLERANCE_MICRO_RAD})")
    return None


def _device_columns(registry: DeviceRegistry, ids: np.ndarray) -> dict[str, np.ndarray]:
    """Per reading, its device's properties (``found`` False for unregistered ids)."""
    known = np.array(sorted(registry.devices), dtype=np.int64)
    if known.size == 0:
        return {"found": np.zeros(ids.size, dtype=bool)}
    devs = [registry.devices[int(i)] for i in known]
    pos = np.clip(np.searchsorted(known, ids), 0, known.size - 1)

    def col(values: list[Any], dtype: Any = float) -> np.ndarray:
        return np.array(values, dtype=dtype)[pos]

    return {
        "found": known[pos] == ids,
        "unknown": col([d.role == "unknown" for d in devs], bool),
        "p_min": col([d.p_min_rated_w for d in devs]),
        "p_max": col([d.p_max_rated_w for d in devs]),
        "rated": col([d.rated_abs_w for d in devs]),
        "v_lo": col([d.v_limits_pu[0] for d in devs]),
        "v_hi": col([d.v_limits_pu[1] for d in devs]),
        "angle": col([d.angle_micro_rad for d in devs], np.int64),
        "meter": col([d.meter.lower() for d in devs], object),
    }


def rejection_codes(records: np.ndarray, registry: DeviceRegistry, *,
                    block_time_s: np.ndarray | None = None, meters: np.ndarray | None = None,
                    window: ReadingWindow = DEFAULT_WINDOW) -> np.ndarray:
    """Vectorised :func:`rejection` over a structured array of readings (fields
    ``READING_FIELDS``): per reading the code of the first rule it breaks (``RULES[code - 1]``),
    0 when it passes; ``block_time_s``/``meters`` per reading, as in :func:`rejection`."""
    ids = np.asarray(records["device_id"], dtype=np.int64)
    codes = np.zeros(ids.size, dtype=np.int8)
    if ids.size == 0:
        return codes
    dev = _device_columns(registry, ids)
    found = dev["found"]
    if not found.any():
        return np.full(ids.size, RULES.index("unknown_device") + 1, dtype=np.int8)
    ts = np.asarray(records["timestamp"], dtype=np.int64)
    p = np.asarray(records["p_w"], dtype=float)
    v_pu = micro_pu_to_pu(np.asarray(records["v_micro_pu"], dtype=np.int64))
    slack = (RATED_TOLERANCE - 1) * dev["rated"]
    broken = {
        "unknown_device": ~found | dev["unknown"],
        "minute": ts % SECONDS_PER_MINUTE != 0,
        "window": _outside_window(ts, block_time_s, window),
        "meter": _wrong_meter(meters, dev["meter"]),
        "p": (p < dev["p_min"] - slack) | (p > dev["p_max"] + slack),
        "q": np.abs(np.asarray(records["q_var"], dtype=float)) > RATED_TOLERANCE * dev["rated"],
        "v": (v_pu < dev["v_lo"]) | (v_pu > dev["v_hi"]),
        "angle": np.abs(np.asarray(records["theta_micro_rad"], dtype=np.int64) - dev["angle"])
        > ANGLE_TOLERANCE_MICRO_RAD,
    }
    for rule in reversed(RULES[:-1]):  # the first rule broken wins
        codes[broken[rule]] = RULES.index(rule) + 1
    return codes


def _outside_window(ts: np.ndarray, block_time_s: np.ndarray | None,
                    window: ReadingWindow) -> np.ndarray:
    if block_time_s is None:
        return np.zeros(ts.size, dtype=bool)
    late_s = np.asarray(block_time_s, dtype=np.int64) - (ts + SECONDS_PER_MINUTE)
    return (late_s > window.max_age_s) | (-late_s > window.max_ahead_s)


def _wrong_meter(meters: np.ndarray | None, registered: np.ndarray) -> np.ndarray:
    if meters is None:
        return np.zeros(registered.size, dtype=bool)
    given = np.char.lower(np.asarray(meters, dtype=str))
    known = registered.astype(str)
    return (known != "") & (given != known)
