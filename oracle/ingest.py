"""Event ingestion: ``ReadingsPosted`` (and ``SessionsDeclared``, ``oracle.sessions``) logs of
the capacity contract -> the oracle's store.

The logs come from ``gridshare.chain.events.EventReader`` (all of the contract's logs, none kept
in memory), whose windows, confirmations and reorg policy are those of the whole code base
(docs/chain.md, "Reading events"). The store keeps the cursor and the recorded block hashes, so
ingestion resumes after a restart. One ``Ingestor.poll()``:

1. the reader is set to the store's cursor (block number and hash) and its recorded block hashes
   whenever it stands elsewhere (first poll, a store rewound or edited by hand);
2. it reads the next range: ``[cursor + 1, min(head - confirmations, cursor +
   max_blocks_per_poll)]`` in windows of ``window_blocks`` blocks. If the cursor block changed
   hash, the chain reorganised: the reader goes back to the newest recorded block still on the
   chain and the store forgets every reading and rejection above it (nothing recorded still on
   the chain: back to the deployment block). A range the chain changed under while it was read
   is read again on the next poll (``PollReport.retry``);
3. decode the packed 24-byte records (layout in ``GridCapacity.postReadings``), validate them
   (the plausibility rules of ``oracle.registry``, with the time of each event's block for the
   reading window and its meter; duplicates of an accepted (device, timestamp)) and store
   readings, rejections (rule and reason; each one logged naming meter, device and reason), the
   range's recorded block hashes and the new cursor in one SQLite transaction.

Readings are keyed by (tx hash, log index, position in the blob): reading a log twice is
harmless. Registry events (DeviceRegistered, RatedRangeSet, DeviceMeterSet) mark the registry
stale so the caller refreshes it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hexbytes import HexBytes

from gridshare.chain.events import EventReader, Reorg
from oracle.registry import (
    DEFAULT_WINDOW,
    READING_FIELDS,
    RULES,
    DeviceRegistry,
    ReadingWindow,
    rejection,
    rejection_codes,
    unpack_records,
)
from oracle.sessions import session_rows
from oracle.store import Cursor, Store

log = logging.getLogger(__name__)

#: One record of ``postReadings``: uint32 deviceId, uint32 timestamp, int32 P (W), int32 Q (var),
#: uint32 V (micro-pu), int32 theta (micro-rad), big-endian.
READING_DTYPE = np.dtype([
    ("device_id", ">u4"), ("timestamp", ">u4"), ("p_w", ">i4"), ("q_var", ">i4"),
    ("v_micro_pu", ">u4"), ("theta_micro_rad", ">i4"),
])
REGISTRY_EVENTS = ("DeviceRegistered", "RatedRangeSet", "DeviceMeterSet")


def encode_readings(records: np.ndarray | list[tuple[int, ...]]) -> bytes:
    """Pack readings ((n, 6) integers in ``READING_FIELDS`` order) into the contract's layout."""
    arr = np.asarray(records, dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] != len(READING_FIELDS) or arr.shape[0] == 0:
        raise ValueError(f"readings must have shape (n >= 1, 6), got {arr.shape}")
    out = np.empty(arr.shape[0], dtype=READING_DTYPE)
    for j, name in enumerate(READING_FIELDS):
        info = np.iinfo(READING_DTYPE[name].newbyteorder("="))
        col = arr[:, j]
        if col.min() < info.min or col.max() > info.max:
            raise ValueError(f"reading field {name} outside {info.min}..{info.max}")
        out[name] = col
    return out.tobytes()


def decode_readings(packed: bytes) -> np.ndarray:
    """The records of a ``ReadingsPosted`` blob as a structured array (fields READING_FIELDS)."""
    return unpack_records(packed, READING_DTYPE, "readings")


@dataclass
class PollReport:
    """What one poll did."""

    from_block: int = 0
    to_block: int = -1
    logs: int = 0
    readings: int = 0
    rejected: int = 0
    sessions: int = 0
    reorg_depth: int = 0
    forgotten_readings: int = 0
    registry_changed: bool = False
    retry: bool = False
    reasons: list[str] = field(default_factory=list)

    @property
    def advanced(self) -> bool:
        return self.to_block >= self.from_block


class Ingestor:
    """Reads readings of one capacity contract into a ``Store`` (see module docstring)."""

    def __init__(
        self,
        chain: Any,
        capacity: Any,
        store: Store,
        registry: Callable[[], DeviceRegistry],
        *,
        start_block: int = 0,
        confirmations: int = 0,
        window_blocks: int = 50,
        max_blocks_per_poll: int = 2000,
        window: ReadingWindow = DEFAULT_WINDOW,
        refresh_registry: Callable[[], None] = lambda: None,
    ) -> None:
        if max_blocks_per_poll < 1:
            raise ValueError(f"max_blocks_per_poll must be >= 1, got {max_blocks_per_poll}")
        self.w3 = chain.w3
        self.capacity = capacity
        self.store = store
        self.registry = registry
        self.refresh_registry = refresh_registry
        self.start_block = int(start_block)
        self.max_blocks_per_poll = int(max_blocks_per_poll)
        self.window = window
        self.reader = EventReader(chain, capacity, self.start_block, window_blocks=window_blocks,
                                  confirmations=confirmations, keep_logs=False)

    # ---- the reader and the store
    def _sync_reader(self) -> None:
        """Set the reader to the store's cursor and recorded hashes if it stands elsewhere."""
        cursor = self.store.cursor()
        if cursor is None:
            if self.reader.position() != (self.start_block - 1, None):
                self.reader.seek(None, {})
        elif self.reader.position() != (cursor.block_number, cursor.block_hash):
            hashes = dict(self.store.block_hashes_desc(cursor.block_number))
            hashes[cursor.block_number] = cursor.block_hash
            self.reader.seek(cursor.block_number, hashes)

    def _rewind(self, reorg: Reorg) -> int:
        """Forget what the store holds above the reorg's ancestor; returns readings forgotten."""
        ancestor = (None if reorg.ancestor_hash is None
                    else Cursor(reorg.ancestor_block, reorg.ancestor_hash))
        n_read, n_rej = self.store.rewind(ancestor)
        log.warning(
            "reorg: block %d changed; rewound to %s, forgot %d readings and %d rejections",
            reorg.old_head_block,
            f"block {reorg.ancestor_block}" if ancestor else "the deployment block", n_read, n_rej,
        )
        return n_read

    def check_continuity(self) -> tuple[Cursor | None, int, int]:
        """Rewind the store if the cursor block is no longer on the chain.

        Returns (cursor after the check, reorg depth in blocks, readings forgotten).
        """
        self._sync_reader()
        reorg = self.reader.check()
        if reorg is None:
            return self.store.cursor(), 0, 0
        forgotten = self._rewind(reorg)
        return self.store.cursor(), reorg.depth, forgotten

    # ---- one poll
    def poll(self) -> PollReport:
        """Ingest the next confirmed block range (see module docstring)."""
        report = PollReport()
        self._sync_reader()
        result = self.reader.read(max_blocks=self.max_blocks_per_poll)
        if result.reorg is not None:
            report.reorg_depth = result.reorg.depth
            report.forgotten_readings = self._rewind(result.reorg)
        if result.retry:
            report.retry = True  # the range changed under us: read it again next time
            return report
        report.from_block, report.to_block = result.from_block, result.to_block
        if not result.advanced:
            return report
        if any(e["event"] in REGISTRY_EVENTS for e in result.logs):
            report.registry_changed = True
            self.refresh_registry()  # once per range, before its readings are validated
        events = [e for e in result.logs if e["event"] == "ReadingsPosted"]
        declared = [e for e in result.logs if e["event"] == "SessionsDeclared"]
        report.logs = len(events) + len(declared)
        block_times = {n: int(self.w3.eth.get_block(n)["timestamp"])
                       for n in sorted({int(e["blockNumber"]) for e in events + declared})}
        readings, rejected = self._decode(events, block_times)
        sessions = session_rows(declared, self.registry(), block_times, self.window)
        n_new, n_rej = self.store.commit_range(
            Cursor(result.to_block, str(result.to_hash)), result.block_hashes, readings, rejected,
            sessions=sessions,
        )
        report.readings, report.rejected = n_new, n_rej
        report.sessions = sum(1 for r in sessions if r[-2] is None)
        for r in (r for r in sessions if r[-2] is not None):
            log.warning("rejected vehicle session: meter %s, device %s (tx %s log %d #%d): %s: "
                        "%s", r[4], r[5], r[0][:10], r[1], r[2], r[-2], r[-1])
        report.reasons = [r[-2] for r in rejected]
        self._log_rejected(rejected)
        return report

    def _log_rejected(self, rejected: list[tuple[Any, ...]]) -> None:
        """One warning per rejected reading, naming meter, device and reason."""
        registry = self.registry()
        for row in rejected:
            device = registry.devices.get(int(row[5]))
            named = device is not None and device.name != f"device-{row[5]}"
            name = f"{device.name} (id {row[5]})" if named else str(row[5])
            log.warning("rejected reading: meter %s, device %s, minute %d (tx %s log %d #%d): "
                        "%s: %s", row[4], name, row[6], row[0][:10], row[1], row[2], row[-1],
                        row[-2])

    def _decode(self, events: list[Any], block_times: dict[int, int]
                ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """Decode and validate the readings of the ``ReadingsPosted`` logs ``events``
        (vectorised); returns the rows of ``readings`` and ``rejected`` in the store's column
        order."""
        if not events:
            return [], []
        blobs = [decode_readings(e["args"]["packed"]) for e in events]
        records = np.concatenate(blobs)
        sizes = [len(b) for b in blobs]
        event_of = np.repeat(np.arange(len(events)), sizes)
        position = np.concatenate([np.arange(n) for n in sizes])
        meta = [(HexBytes(e["transactionHash"]).to_0x_hex(), int(e["logIndex"]),
                 int(e["blockNumber"]), HexBytes(e["blockHash"]).to_0x_hex(),
                 str(e["args"]["meter"])) for e in events]
        registry = self.registry()
        if not np.isin(np.unique(records["device_id"]), list(registry.devices)).all():
            self.refresh_registry()  # a device registered since the last refresh
            registry = self.registry()
        block_time = np.array([block_times[m[2]] for m in meta], dtype=np.int64)[event_of]
        meters = np.array([m[4] for m in meta], dtype=object)[event_of]
        reasons = self._rule_breaks(records, registry, block_time, meters)
        self._find_duplicates(records, reasons, [(meta[e][0], meta[e][1], int(p)) for e, p in
                                                 zip(event_of.tolist(), position.tolist(),
                                                     strict=True)])
        accepted, rejected = [], []
        for i, (e, p) in enumerate(zip(event_of.tolist(), position.tolist(), strict=True)):
            tx_hash, log_index, block_number, block_hash, meter = meta[e]
            values = tuple(int(x) for x in records[i].tolist())
            if i in reasons:
                rejected.append((tx_hash, log_index, p, block_number, meter, *values[:6],
                                 *reasons[i][::-1]))
            else:
                accepted.append((tx_hash, log_index, p, block_number, block_hash, meter,
                                 *values))
        return accepted, rejected

    def _rule_breaks(self, records: np.ndarray, registry: DeviceRegistry,
                     block_time: np.ndarray, meters: np.ndarray) -> dict[int, tuple[str, str]]:
        """Per rejected record index, (rule, reason) of the first plausibility rule it breaks."""
        codes = rejection_codes(records, registry, block_time_s=block_time, meters=meters,
                                window=self.window)
        out = {}
        for i in np.flatnonzero(codes).tolist():
            reading = dict(zip(READING_FIELDS, (int(v) for v in records[i].tolist()),
                               strict=True))
            out[i] = rejection(reading, registry, block_time_s=int(block_time[i]),
                               meter=str(meters[i]), window=self.window) or (
                RULES[codes[i] - 1], "rejected")
        return out

    def _find_duplicates(self, records: np.ndarray, reasons: dict[int, tuple[str, str]],
                         own: list[tuple[str, int, int]]) -> None:
        """Add to ``reasons`` every record whose (device, timestamp) is already accepted (in the
        store, or earlier among ``records``): the first reading counts."""
        ts = records["timestamp"].astype(np.int64)
        key = (records["device_id"].astype(np.int64) << 32) | ts
        ok = np.array([i for i in range(len(records)) if i not in reasons], dtype=np.int64)
        existing = self.store.accepted_keys(np.unique(ts[ok]).tolist())
        first_of: dict[int, tuple[str, int, int]] = {}
        for i in ok.tolist():
            k = int(key[i])
            first = first_of.get(k) or existing.get(k)
            if first is not None and first != own[i]:
                reasons[i] = ("duplicate", f"duplicate: device {k >> 32} at {k & 0xFFFFFFFF} "
                              f"already read in tx {first[0][:10]} log {first[1]} #{first[2]}")
            else:
                first_of[k] = own[i]
