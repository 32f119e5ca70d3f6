"""The DSO's audit reads of the capacity contract: bands as written, and metered power vs bands.

Both come from the contract's events, so anyone can repeat them from the chain alone:

* ``BandsWritten(interval, inputsHash, updatedAt, bands)``: one 20-byte record per device
  (``struct.iter_unpack(">Iqq", bands)``: device id, P_min W, P_max W), with the hash of the
  oracle's inputs and the block (and transaction) it was written in;
* ``ReadingsPosted(meter, count, packed)``: 24-byte meter records decoded by
  :func:`oracle.ingest.decode_readings` (power P in W, consumption positive).

Compliance: every reading of a device whose interval (``timestamp // intervalSeconds``) has a
band for that device is compared with the band; a reading with ``P < P_min`` or ``P > P_max``
is a violation, its excess in W is the distance to the nearer limit. Readings of devices or
intervals without a band are counted, not judged.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gridshare.chain.events import DEFAULT_WINDOW_BLOCKS, EventReader
from oracle.ingest import decode_readings

BAND_RECORD = struct.Struct(">Iqq")
MAX_LISTED_VIOLATIONS = 1000


@dataclass(frozen=True)
class BandRecord:
    """One device's band for one interval, as written on-chain (W, unix s)."""

    interval: int
    device_id: int
    p_min_w: int
    p_max_w: int
    inputs_hash: str
    updated_at_unix_s: int
    block_number: int
    tx_hash: str


@dataclass
class ComplianceReport:
    """Metered power against bands over ``[from_interval, to_interval]``."""

    from_interval: int
    to_interval: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    violations: list[dict[str, Any]] = field(default_factory=list)
    n_violations: int = 0
    n_readings_checked: int = 0
    n_readings_without_band: int = 0


class CapacityAudit:
    """Event reads of one GridCapacity contract through a reorg-aware ``EventReader`` (which
    keeps the logs read so far and is safe for several threads)."""

    def __init__(self, chain: Any, capacity: Any, start_block: int, interval_s: int,
                 max_range_blocks: int = DEFAULT_WINDOW_BLOCKS) -> None:
        self.chain = chain
        self.capacity = capacity
        self.start_block = int(start_block)
        self.interval_s = int(interval_s)
        self.reader = EventReader(chain, capacity, self.start_block,
                                  window_blocks=max_range_blocks)

    def bands(self, from_interval: int, to_interval: int,
              device_id: int | None = None) -> list[BandRecord]:
        """Bands written for intervals in ``[from_interval, to_interval]`` (one device or all)."""
        out = []
        for e in self.reader.logs("BandsWritten"):
            a = e["args"]
            interval = int(a["interval"])
            if not from_interval <= interval <= to_interval:
                continue
            for dev, p_min_w, p_max_w in BAND_RECORD.iter_unpack(bytes(a["bands"])):
                if device_id is not None and dev != device_id:
                    continue
                out.append(BandRecord(
                    interval=interval, device_id=int(dev), p_min_w=int(p_min_w),
                    p_max_w=int(p_max_w), inputs_hash="0x" + bytes(a["inputsHash"]).hex(),
                    updated_at_unix_s=int(a["updatedAt"]), block_number=int(e["blockNumber"]),
                    tx_hash=e["transactionHash"].to_0x_hex()))
        return out

    def readings(self, from_interval: int, to_interval: int) -> np.ndarray:
        """Decoded readings whose interval lies in ``[from_interval, to_interval]``."""
        blobs = [decode_readings(bytes(e["args"]["packed"]))
                 for e in self.reader.logs("ReadingsPosted")]
        if not blobs:
            return decode_readings(b"\0" * 24)[:0]
        arr = np.concatenate(blobs)
        interval = arr["timestamp"].astype(np.int64) // self.interval_s
        return arr[(interval >= from_interval) & (interval <= to_interval)]

    def compliance(self, from_interval: int, to_interval: int) -> ComplianceReport:
        """Per device and interval: readings vs band, violations listed (module docstring)."""
        report = ComplianceReport(from_interval, to_interval)
        bands = self.bands(from_interval, to_interval)
        readings = self.readings(from_interval, to_interval)
        dev = readings["device_id"].astype(np.int64)
        ts = readings["timestamp"].astype(np.int64)
        p_w = readings["p_w"].astype(np.int64)
        interval = ts // self.interval_s
        key = (interval << 32) | dev
        if not bands:
            report.n_readings_without_band = len(readings)
            return report
        band_key = np.array([(b.interval << 32) | b.device_id for b in bands], dtype=np.int64)
        order = np.argsort(band_key, kind="stable")
        band_key = band_key[order]
        lo = np.array([b.p_min_w for b in bands], dtype=np.int64)[order]
        hi = np.array([b.p_max_w for b in bands], dtype=np.int64)[order]
        pos = np.clip(np.searchsorted(band_key, key), 0, len(band_key) - 1)
        has_band = band_key[pos] == key if len(key) else np.zeros(0, dtype=bool)
        report.n_readings_without_band = int((~has_band).sum())
        report.n_readings_checked = int(has_band.sum())
        below = has_band & (p_w < lo[pos])
        above = has_band & (p_w > hi[pos])
        excess = np.where(below, lo[pos] - p_w, np.where(above, p_w - hi[pos], 0))
        bad = below | above
        report.n_violations = int(bad.sum())
        for i in np.flatnonzero(bad)[:MAX_LISTED_VIOLATIONS]:
            report.violations.append({
                "device_id": int(dev[i]), "interval": int(interval[i]),
                "timestamp_unix_s": int(ts[i]), "p_w": int(p_w[i]),
                "band_p_min_w": int(lo[pos[i]]), "band_p_max_w": int(hi[pos[i]]),
                "excess_w": int(excess[i]),
            })
        # one row per band: counts and metered range of its readings
        n = len(band_key)
        idx = pos[has_band]
        count = np.bincount(idx, minlength=n)
        n_bad = np.bincount(idx, weights=bad[has_band], minlength=n).astype(np.int64)
        p_sum = np.bincount(idx, weights=p_w[has_band], minlength=n)
        p_min = np.full(n, np.iinfo(np.int64).max)
        p_max = np.full(n, np.iinfo(np.int64).min)
        np.minimum.at(p_min, idx, p_w[has_band])
        np.maximum.at(p_max, idx, p_w[has_band])
        worst = np.zeros(n, dtype=np.int64)
        np.maximum.at(worst, idx, excess[has_band])
        for j in range(n):
            b = bands[int(order[j])]
            seen = int(count[j])
            report.rows.append({
                "device_id": b.device_id, "interval": b.interval,
                "band_p_min_w": b.p_min_w, "band_p_max_w": b.p_max_w,
                "n_readings": seen,
                "metered_p_min_w": int(p_min[j]) if seen else None,
                "metered_p_max_w": int(p_max[j]) if seen else None,
                "metered_p_mean_w": float(p_sum[j] / seen) if seen else None,
                "n_violations": int(n_bad[j]), "worst_excess_w": int(worst[j]),
                "compliant": bool(n_bad[j] == 0),
            })
        return report
