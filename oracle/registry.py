"""The device registry and the rejection rules of meter readings.

The device registry comes from the capacity contract (``deviceCount``/``deviceIdAt``/
``deviceOf``) and the oracle's feeder model. A device's role follows from its kind and bus:

* ``flexibility``: kind CommunityBattery or ChargingStation: gets a band; its own readings are
  kept apart (they are the flexibility's operation, not uncontrollable load);
* ``transformer``: kind Other at the feeder's slack bus: its voltage reading is the slack
  reference of the load flow;
* ``load``: kind Other at another bus of the feeder: an uncontrollable load (customer) meter;
* ``unknown``: a bus the feeder model does not have: its readings are rejected.

Rules (docs/oracle.md): a reading is rejected, with the reason stored, when its device is not
registered or is ``unknown``; its timestamp is not on a minute boundary; |P| exceeds the
device's rated range by more than ``RATED_TOLERANCE - 1`` of its largest rated |P|; |Q| exceeds
``RATED_TOLERANCE`` times that largest rated |P|; V lies outside ``V_PHYSICAL_PU`` (a meter fault,
far beyond the 0.9..1.1 pu of EN 50160); |theta| > pi. A second reading of the same device and
timestamp is a duplicate (the first one counts; checked by the store).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from capacity.flexibility import Flexibility, FlexibilityKind
from gridshare.units import micro_pu_to_pu, w_to_kw

SECONDS_PER_MINUTE = 60
#: Physically plausible voltage magnitude of a reading, pu (outside: a meter fault).
V_PHYSICAL_PU = (0.5, 1.5)
#: A reading's |P| may exceed its device's rated range by this factor before it is rejected.
RATED_TOLERANCE = 1.1
#: Largest |theta| of a reading, micro-rad.
THETA_LIMIT_MICRO_RAD = round(math.pi * 1e6)
KIND_NAMES = ("community_battery", "charging_station", "other")
READING_FIELDS = ("device_id", "timestamp", "p_w", "q_var", "v_micro_pu", "theta_micro_rad")


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
