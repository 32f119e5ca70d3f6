"""Event ingestion: ``ReadingsPosted`` logs of the capacity contract -> the oracle's store.

One ``Ingestor.poll()``:

1. head = latest block, safe head = head - ``confirmations`` (0 on QBFT, which has instant
   finality; more on chains that reorganise: anvil with reorgs, clique, PoW-like devnets);
2. hash continuity: the stored cursor block must still have the stored hash. If not, the chain
   reorganised: walk back over the stored block hashes (every cursor block and every block that
   had events) to the newest one still on the chain, forget every reading and rejection above it
   and continue from there (nothing stored: from the deployment block);
3. read logs over ``[cursor + 1, min(safe head, cursor + max_blocks_per_poll)]`` in windows of
   ``window_blocks`` blocks (eth-tester's get_logs slows sharply over wide ranges; RPC nodes cap
   ranges too), then check again that the range's last block hash did not change and that the
   first block's parent is the cursor block (else retry on the next poll);
4. decode the packed 24-byte records (layout in ``GridCapacity.postReadings``), validate them
   (``oracle.state.rejection_reason``; a timestamp more than ``MAX_AHEAD_S`` after its block's
   time; duplicates of an accepted (device, timestamp)) and store
   readings, rejections and the new cursor in one SQLite transaction.

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
from eth_utils import event_abi_to_log_topic
from hexbytes import HexBytes

from oracle.state import READING_FIELDS, DeviceRegistry, rejection_mask, rejection_reason
from oracle.store import Cursor, Store

log = logging.getLogger(__name__)

READING_BYTES = 24
#: One record of ``postReadings``: uint32 deviceId, uint32 timestamp, int32 P (W), int32 Q (var),
#: uint32 V (micro-pu), int32 theta (micro-rad), big-endian.
READING_DTYPE = np.dtype([
    ("device_id", ">u4"), ("timestamp", ">u4"), ("p_w", ">i4"), ("q_var", ">i4"),
    ("v_micro_pu", ">u4"), ("theta_micro_rad", ">i4"),
])
REGISTRY_EVENTS = ("DeviceRegistered", "RatedRangeSet", "DeviceMeterSet")
#: A reading may not describe a minute more than this after the time of its block (a meter
#: with a wrong clock would otherwise drive the readings clock far ahead).
MAX_AHEAD_S = 86_400


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
    packed = bytes(packed)
    if len(packed) == 0 or len(packed) % READING_BYTES:
        raise ValueError(f"readings blob of {len(packed)} bytes is not a multiple of "
                         f"{READING_BYTES}")
    return np.frombuffer(packed, dtype=READING_DTYPE)


@dataclass
class PollReport:
    """What one poll did."""

    from_block: int = 0
    to_block: int = -1
    logs: int = 0
    readings: int = 0
    rejected: int = 0
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
        late_before_s: Callable[[], int | None] = lambda: None,
        refresh_registry: Callable[[], None] = lambda: None,
    ) -> None:
        if confirmations < 0 or window_blocks < 1 or max_blocks_per_poll < 1:
            raise ValueError("confirmations must be >= 0, window_blocks and "
                             "max_blocks_per_poll >= 1")
        self.chain = chain
        self.w3 = chain.w3
        self.capacity = capacity
        self.store = store
        self.registry = registry
        self.refresh_registry = refresh_registry
        self.start_block = int(start_block)
        self.confirmations = int(confirmations)
        self.window_blocks = int(window_blocks)
        self.max_blocks_per_poll = int(max_blocks_per_poll)
        self.late_before_s = late_before_s
        abi = {e["name"]: e for e in capacity.abi if e.get("type") == "event"}
        self._readings_topic = HexBytes(event_abi_to_log_topic(abi["ReadingsPosted"]))
        self._registry_topics = {HexBytes(event_abi_to_log_topic(abi[n])) for n in REGISTRY_EVENTS}
        self._readings_event = capacity.events.ReadingsPosted()

    # ---- chain helpers
    def _hash(self, number: int) -> str | None:
        try:
            block = self.w3.eth.get_block(number)
        except Exception as exc:  # BlockNotFound and node-specific errors beyond the head
            if "not found" in str(exc).lower() or type(exc).__name__ == "BlockNotFound":
                return None
            raise
        if block is None:
            return None
        return HexBytes(block["hash"]).to_0x_hex()

    def _logs(self, start: int, end: int) -> list[Any]:
        out: list[Any] = []
        while start <= end:
            stop = min(start + self.window_blocks - 1, end)
            out.extend(self.w3.eth.get_logs({"address": self.capacity.address,
                                             "fromBlock": start, "toBlock": stop}))
            start = stop + 1
        return out

    # ---- reorgs
    def check_continuity(self) -> tuple[Cursor | None, int, int]:
        """Rewind the store if the cursor block is no longer on the chain.

        Returns (cursor after the check, reorg depth in blocks, readings forgotten).
        """
        cursor = self.store.cursor()
        if cursor is None or self._hash(cursor.block_number) == cursor.block_hash:
            return cursor, 0, 0
        ancestor = None
        for number, stored in self.store.block_hashes_desc(cursor.block_number):
            if self._hash(number) == stored:
                ancestor = Cursor(number, stored)
                break
        n_read, n_rej = self.store.rewind(ancestor)
        depth = cursor.block_number - (ancestor.block_number if ancestor else self.start_block - 1)
        log.warning(
            "reorg: block %d is no longer %s; rewound to %s, forgot %d readings and %d "
            "rejections", cursor.block_number, cursor.block_hash[:10],
            f"block {ancestor.block_number}" if ancestor else "the deployment block", n_read, n_rej,
        )
        return ancestor, depth, n_read

    # ---- one poll
    def poll(self) -> PollReport:
        """Ingest the next confirmed block range (see module docstring)."""
        report = PollReport()
        cursor, report.reorg_depth, report.forgotten_readings = self.check_continuity()
        head = int(self.w3.eth.block_number)
        safe = head - self.confirmations
        start = self.start_block if cursor is None else cursor.block_number + 1
        if start > safe:
            report.from_block, report.to_block = start, start - 1
            return report
        end = min(safe, start + self.max_blocks_per_poll - 1)
        end_hash = self._hash(end)
        logs = self._logs(start, end)
        if cursor is not None:
            parent = self.w3.eth.get_block(start)["parentHash"]
            if HexBytes(parent).to_0x_hex() != cursor.block_hash:
                report.retry = True
                return report
        block_hashes: dict[int, str] = {}
        for entry in logs:
            number = int(entry["blockNumber"])
            if number not in block_hashes:
                block_hashes[number] = HexBytes(entry["blockHash"]).to_0x_hex()
        block_times: dict[int, int] = {}
        for number, log_hash in block_hashes.items():
            block = self.w3.eth.get_block(number)
            if HexBytes(block["hash"]).to_0x_hex() != log_hash:
                report.retry = True
                return report
            block_times[number] = int(block["timestamp"])
        if end_hash is None or self._hash(end) != end_hash:
            report.retry = True  # the range changed under us: read it again next time
            return report

        topics = [HexBytes(e["topics"][0]) if e["topics"] else HexBytes(b"") for e in logs]
        if any(t in self._registry_topics for t in topics):
            report.registry_changed = True
            self.refresh_registry()  # once per range, before its readings are validated
        events = [(entry, self._readings_event.process_log(entry))
                  for entry, topic0 in zip(logs, topics, strict=True)
                  if topic0 == self._readings_topic]
        report.logs = len(events)
        readings, rejected = self._decode(events, block_times)
        n_new, n_rej = self.store.commit_range(
            Cursor(end, end_hash), block_hashes, readings, rejected
        )
        report.from_block, report.to_block = start, end
        report.readings, report.rejected = n_new, n_rej
        report.reasons = [r[-1] for r in rejected]
        for row in rejected:
            log.warning("rejected reading of device %d at %d (tx %s log %d #%d): %s",
                        row[5], row[6], row[0][:10], row[1], row[2], row[-1])
        return report

    def _decode(self, events: list[tuple[Any, Any]], block_times: dict[int, int]
                ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """Decode and validate the readings of ``events`` (vectorised); returns the rows of
        ``readings`` and ``rejected`` in the store's column order."""
        if not events:
            return [], []
        blobs = [decode_readings(event["args"]["packed"]) for _, event in events]
        records = np.concatenate(blobs)
        sizes = [len(b) for b in blobs]
        event_of = np.repeat(np.arange(len(events)), sizes)
        position = np.concatenate([np.arange(n) for n in sizes])
        meta = [(HexBytes(e["transactionHash"]).to_0x_hex(), int(e["logIndex"]),
                 int(e["blockNumber"]), HexBytes(e["blockHash"]).to_0x_hex(),
                 str(ev["args"]["meter"])) for e, ev in events]
        registry = self.registry()
        if not np.isin(np.unique(records["device_id"]), list(registry.devices)).all():
            self.refresh_registry()  # a device registered since the last refresh
            registry = self.registry()
        ts = records["timestamp"].astype(np.int64)
        block_time = np.array([block_times[m[2]] for m in meta], dtype=np.int64)[event_of]
        bad = rejection_mask(records, registry) | (ts > block_time + MAX_AHEAD_S)
        reasons: dict[int, str] = {}
        for i in np.flatnonzero(bad).tolist():
            reading = dict(zip(READING_FIELDS, (int(v) for v in records[i].tolist()),
                               strict=True))
            reasons[i] = rejection_reason(reading, registry) or (
                f"timestamp {int(ts[i])} is more than {MAX_AHEAD_S} s after its block's time "
                f"{int(block_time[i])}")
        # duplicates: the first accepted reading of a (device, timestamp) counts
        key = (records["device_id"].astype(np.int64) << 32) | ts
        ok = np.flatnonzero(~bad)
        existing = self.store.accepted_keys(np.unique(ts[ok]).tolist())
        first_of: dict[int, tuple[str, int, int]] = {}
        own = [(meta[e][0], meta[e][1], int(p)) for e, p in zip(event_of.tolist(),
                                                               position.tolist(), strict=True)]
        for i in ok.tolist():
            k = int(key[i])
            first = first_of.get(k) or existing.get(k)
            if first is not None and first != own[i]:
                reasons[i] = (f"duplicate: device {k >> 32} at {k & 0xFFFFFFFF} already read in "
                              f"tx {first[0][:10]} log {first[1]} #{first[2]}")
            else:
                first_of[k] = own[i]
        late_before = self.late_before_s()
        values = records.tolist()
        accepted, rejected = [], []
        for i, (e, p) in enumerate(zip(event_of.tolist(), position.tolist(), strict=True)):
            tx_hash, log_index, block_number, block_hash, meter = meta[e]
            dev, t, p_w, q_var, v, theta = (int(x) for x in values[i])
            if i in reasons:
                rejected.append((tx_hash, log_index, p, block_number, meter, dev, t, p_w, q_var,
                                 v, theta, reasons[i]))
            else:
                late = int(late_before is not None and t < late_before)
                accepted.append((tx_hash, log_index, p, block_number, block_hash, meter, dev, t,
                                 p_w, q_var, v, theta, late))
        return accepted, rejected
