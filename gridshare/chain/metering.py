"""Metered energy per device and interval, from the meter readings on-chain: the one rule by
which the oracle writes meter totals (``GridCapacity.writeMeterTotals``) and by which every
replay checks them.

**Which readings count.** The records of ``ReadingsPosted`` events (24-byte
``struct.pack(">IIiiIi", deviceId, timestamp_s, p_w, q_var, v_micro_pu, angle_micro_rad)``) whose
event ``meter`` is the device's meter in the registry at the time of the post
(``DeviceRegistered`` / ``DeviceMeterSet`` events before it in chain order); the contract checks
only that the poster holds METER_ROLE. Of several readings of one device with one timestamp the
first posted counts.

**Energy of a device in interval N** (unix seconds ``[N*T, (N+1)*T)``, T = intervalSeconds): its
counted readings with timestamps in that range, in time order; each holds its power from its
timestamp until the next one's (the last until the interval's end), and the first one also
covers the interval's start: ``E = sum(P_W * dt_s)`` W*s, rounded half away from zero to Wh
(``E / 3600``). A device with no reading in the interval has no total.

**Totals blob.** 12-byte big-endian records ``struct.pack(">Iq", deviceId, energyWh)`` in
strictly ascending device id (what the contract checks and stores the keccak256 of).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from typing import Any

from gridshare.chain.events import EventReader

READING = struct.Struct(">IIiiIi")
TOTAL = struct.Struct(">Iq")
SECONDS_PER_HOUR = 3600
ORACLE_ROLE_NAME = "oracle"

#: A counted reading: (device id, timestamp unix s, P in W).
Reading = tuple[int, int, int]


def encode_totals(totals: Mapping[int, int]) -> bytes:
    """The contract's totals blob of ``{device id: Wh}`` (ascending device id)."""
    return b"".join(TOTAL.pack(int(d), int(totals[d])) for d in sorted(totals))


def decode_totals(blob: bytes) -> dict[int, int]:
    """``{device id: Wh}`` of a totals blob."""
    if len(blob) % TOTAL.size:
        raise ValueError(f"a totals blob has a multiple of {TOTAL.size} bytes, got {len(blob)}")
    return {d: wh for d, wh in TOTAL.iter_unpack(bytes(blob))}


def _round_half_away(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded to the nearest integer, halves away from zero."""
    q = (2 * abs(numerator) + denominator) // (2 * denominator)
    return q if numerator >= 0 else -q


def interval_energy_wh(readings: Iterable[Reading], interval: int,
                       interval_s: int) -> dict[int, int]:
    """Energy (Wh, consumption positive) per device in ``interval`` from counted readings (see
    the module docstring); the first reading of a (device, timestamp) wins."""
    start, end = int(interval) * interval_s, (int(interval) + 1) * interval_s
    per_device: dict[int, dict[int, int]] = {}
    for device, ts, p_w in readings:
        if start <= ts < end:
            per_device.setdefault(int(device), {}).setdefault(int(ts), int(p_w))
    out = {}
    for device, samples in per_device.items():
        times = sorted(samples)
        bounds = [start, *times[1:], end]
        watt_seconds = sum(samples[t] * (bounds[k + 1] - bounds[k]) for k, t in enumerate(times))
        out[device] = _round_half_away(watt_seconds, SECONDS_PER_HOUR)
    return out


class MeteringReader:
    """Counted readings and written totals of one capacity contract, read from its events.

    Readings are decoded once and kept per interval (``interval_s`` long), so the totals of
    interval after interval cost only the new logs; after a reorg everything is read again.
    """

    def __init__(self, chain: Any, capacity: Any, start_block: int, interval_s: int) -> None:
        self.chain = chain
        self.capacity = capacity
        self.interval_s = int(interval_s)
        self.reader = EventReader(chain, capacity, start_block)
        self._seen: list[tuple[int, int]] = []  # (block, log index) of the logs decoded
        self._meter_of: dict[int, str] = {}
        self._by_interval: dict[int, list[Reading]] = {}

    def _catch_up(self, to_block: int | None) -> None:
        logs = self.reader.logs(None, to_block)
        keys = [(int(e["blockNumber"]), int(e["logIndex"])) for e in logs]
        if keys[:len(self._seen)] != self._seen:  # a reorg (or an earlier to_block): start over
            self._seen, self._meter_of, self._by_interval = [], {}, {}
        for e in logs[len(self._seen):]:
            self._decode(e)
        self._seen = keys

    def _decode(self, e: Any) -> None:
        name, args = e["event"], e["args"]
        if name in ("DeviceRegistered", "DeviceMeterSet"):
            self._meter_of[int(args["deviceId"])] = args["meter"]
        elif name == "ReadingsPosted":
            meter = args["meter"]
            for d, ts, p, *_ in READING.iter_unpack(bytes(args["packed"])):
                if self._meter_of.get(d) == meter:
                    self._by_interval.setdefault(ts // self.interval_s, []).append((d, ts, p))

    def readings(self, interval: int, to_block: int | None = None) -> list[Reading]:
        """The counted readings of ``interval`` up to ``to_block``, in chain order."""
        self._catch_up(to_block)
        return list(self._by_interval.get(int(interval), ()))

    def totals(self, interval: int, to_block: int | None = None) -> dict[int, int]:
        """Metered Wh per device in ``interval`` from the readings up to ``to_block``."""
        return interval_energy_wh(self.readings(interval, to_block), interval, self.interval_s)

    def written(self, interval: int, to_block: int | None = None) -> bytes | None:
        """The totals blob the oracle wrote for ``interval`` (None: not written)."""
        for e in self.reader.logs("MeterTotalsWritten", to_block):
            if int(e["args"]["interval"]) == int(interval):
                return bytes(e["args"]["totals"])
        return None


def write_meter_totals(chain: Any, metering: MeteringReader, interval: int,
                       sender: str = ORACLE_ROLE_NAME) -> tuple[dict[int, int], Any]:
    """Compute ``interval``'s totals from the chain's readings and write them with the oracle's
    key; returns (totals, receipt). The interval must have ended on the chain's clock."""
    totals = metering.totals(interval)
    receipt = chain.transact(
        metering.capacity.functions.writeMeterTotals(int(interval), encode_totals(totals)),
        sender)
    return totals, receipt
