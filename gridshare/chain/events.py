"""The one event log reader of the code base: tight block windows, one reorg policy.

``EventReader(chain, contract, start_block)`` reads a contract's logs from ``start_block`` on,
decoded with the contract's ABI, in chain order. It keeps one *stream* per event name
(``reader.logs("BandsWritten")``) and one for all of the contract's logs (``reader.logs()``,
event ``None``; what the oracle's ingestion reads: readings and registry events of one address).
Each stream remembers how far it has scanned, the hashes of some of the blocks it scanned and,
unless ``keep_logs=False``, the logs seen so far, so a repeated read costs only the new blocks.

**Windows.** No ``eth_getLogs`` call spans more than ``window_blocks`` blocks (eth-tester's
``get_logs`` slows down sharply over wide ranges; RPC nodes cap ranges).

**Confirmations.** A read goes up to ``head - confirmations`` (0: up to the head; more on chains
whose newest blocks may still be replaced).

**Reorg policy** (the only one of the code base). A stream records the hash of the last block of
every window it read and of every block that holds one of its logs, so recorded blocks are at
most ``window_blocks`` apart. Before reading on it checks that the last block it scanned still
has the recorded hash. If not, the chain reorganised: it finds the newest recorded block that is
still on the chain (a binary search: when a block is on the chain, so are all below it), drops
every log above that ancestor, reports them in a :class:`Reorg` and reads on from the block
after it. Since every block holding a log is recorded, the dropped logs are exactly those no
longer on the chain. A reorganisation that would take the stream back more than
``max_reorg_depth`` blocks raises :class:`ReorgTooDeepError`; the stream then starts over from
``start_block`` on its next read (a caller that keeps its own cursor, like the ingestion, decides
for itself). A read during which the chain changed (the block before the range or the range's
last block changed hash) is discarded and reported as ``ReadResult.retry``; ``logs()`` retries
it itself.

Callers that persist what they read (the oracle's ingestion) keep their own cursor and restore a
stream with :meth:`EventReader.seek`. One lock per reader makes it safe for several threads.
``decode=False`` hands out the raw logs (of the contract's events only, same order): web3's
decoding costs about 2 ms per log, too much for the order relay's thousands per second.
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from eth_utils import event_abi_to_log_topic
from hexbytes import HexBytes

from gridshare.chain.errors import ChainError

log = logging.getLogger(__name__)

DEFAULT_WINDOW_BLOCKS = 50
DEFAULT_MAX_REORG_DEPTH = 256
#: ``logs()`` gives up after this many reads in a row during which the chain changed.
MAX_READ_ATTEMPTS = 5


class ReorgTooDeepError(ChainError):
    """The chain reorganised deeper than the reader's ``max_reorg_depth`` (or was reset)."""


def block_windows(from_block: int, to_block: int, window_blocks: int
                  ) -> Iterator[tuple[int, int]]:
    """Consecutive inclusive block ranges covering ``[from_block, to_block]``, each at most
    ``window_blocks`` blocks long."""
    start = from_block
    while start <= to_block:
        end = min(start + window_blocks - 1, to_block)
        yield start, end
        start = end + 1


def _block_of(entry: Any) -> int:
    return int(entry["blockNumber"])


@dataclass(frozen=True)
class Reorg:
    """A reorganisation seen by one stream: every log above ``ancestor_block`` was dropped."""

    old_head_block: int  # the last block the stream had scanned
    ancestor_block: int  # newest recorded block still on the chain (start_block - 1: none)
    ancestor_hash: str | None  # its hash (None when it is start_block - 1)
    dropped: tuple[Any, ...]  # the logs dropped, in chain order (empty with keep_logs=False)

    @property
    def depth(self) -> int:
        """Blocks taken back: old head - ancestor."""
        return self.old_head_block - self.ancestor_block


@dataclass(frozen=True)
class ReadResult:
    """What one :meth:`EventReader.read` did; ``to_block < from_block`` when nothing new."""

    from_block: int
    to_block: int
    to_hash: str | None = None  # hash of to_block (None when nothing was read)
    logs: tuple[Any, ...] = ()  # the new logs, in chain order
    block_hashes: Mapping[int, str] = field(default_factory=dict)  # recorded in this read
    reorg: Reorg | None = None
    retry: bool = False  # the chain changed during the read: nothing was taken

    @property
    def advanced(self) -> bool:
        return self.to_block >= self.from_block


@dataclass
class _Stream:
    """Scan state of one event (or of all logs): scanned head, recorded hashes, logs."""

    scanned_to: int
    hashes: dict[int, str] = field(default_factory=dict)
    logs: list[Any] = field(default_factory=list)


class EventReader:
    """Windowed, reorg-aware reader of one contract's logs (see module docstring)."""

    def __init__(self, chain: Any, contract: Any, start_block: int, *,
                 window_blocks: int = DEFAULT_WINDOW_BLOCKS, confirmations: int = 0,
                 max_reorg_depth: int = DEFAULT_MAX_REORG_DEPTH, keep_logs: bool = True,
                 decode: bool = True) -> None:
        if window_blocks < 1 or confirmations < 0 or max_reorg_depth < 1:
            raise ValueError("window_blocks and max_reorg_depth must be >= 1, confirmations "
                             f">= 0; got {window_blocks}, {max_reorg_depth}, {confirmations}")
        self.w3 = chain.w3
        self.address = contract.address
        self.start_block = int(start_block)
        self.window_blocks = int(window_blocks)
        self.confirmations = int(confirmations)
        self.max_reorg_depth = int(max_reorg_depth)
        self.keep_logs = keep_logs
        self.decode = decode
        self._events = {HexBytes(event_abi_to_log_topic(abi)): contract.events[abi["name"]]()
                        for abi in contract.abi
                        if abi.get("type") == "event" and not abi.get("anonymous")}
        self._topics = {event.event_name: topic for topic, event in self._events.items()}
        self._streams: dict[str | None, _Stream] = {}
        self._lock = threading.RLock()

    # ---- public
    def logs(self, event: str | None = None, to_block: int | None = None) -> list[Any]:
        """The stream's logs up to ``to_block`` (default: the confirmed head), in chain order,
        after reading the new blocks (reorgs handled; reads the chain changed under retried)."""
        if not self.keep_logs:
            raise ValueError("this reader keeps no logs (keep_logs=False): use read()")
        with self._lock:
            for _ in range(MAX_READ_ATTEMPTS):
                if not self.read(event, to_block).retry:
                    break
            else:
                raise ChainError(f"the chain changed during {MAX_READ_ATTEMPTS} reads of "
                                 f"{event or 'all'} logs of {self.address}")
            cached = self._stream(event).logs
            if to_block is None:
                return list(cached)
            return cached[:bisect.bisect_right(cached, int(to_block), key=_block_of)]

    def read(self, event: str | None = None, to_block: int | None = None,
             max_blocks: int | None = None) -> ReadResult:
        """Check continuity (handling a reorg), then read the stream's new blocks up to
        ``min(to_block, head - confirmations)``, at most ``max_blocks`` of them."""
        with self._lock:
            stream = self._stream(event)
            reorg = self._check(stream)
            start = stream.scanned_to + 1
            end = int(self.w3.eth.block_number) - self.confirmations
            if to_block is not None:
                end = min(end, int(to_block))
            if max_blocks is not None:
                end = min(end, start + int(max_blocks) - 1)
            if end < start:
                return ReadResult(start, start - 1, reorg=reorg)
            return self._read_range(event, stream, start, end, reorg)

    def check(self, event: str | None = None) -> Reorg | None:
        """Only the continuity check of :meth:`read`: the reorg handled, if there was one."""
        with self._lock:
            return self._check(self._stream(event))

    def position(self, event: str | None = None) -> tuple[int, str | None]:
        """(last scanned block, its recorded hash; None before the first read)."""
        with self._lock:
            stream = self._stream(event)
            return stream.scanned_to, stream.hashes.get(stream.scanned_to)

    def seek(self, scanned_to: int | None, block_hashes: Mapping[int, str],
             event: str | None = None) -> None:
        """Restore a stream from a caller's own record: scanned up to ``scanned_to`` (None:
        nothing scanned), with the recorded ``block_hashes`` (which must include
        ``scanned_to``'s). Cached logs of the stream are forgotten."""
        with self._lock:
            self._stream(event)  # a known event name
            top = self.start_block - 1 if scanned_to is None else int(scanned_to)
            if top >= self.start_block and top not in block_hashes:
                raise ValueError(f"the hash of block {top} is needed to resume from it")
            hashes = {int(n): str(h) for n, h in block_hashes.items()
                      if self.start_block <= int(n) <= top}
            self._streams[event] = _Stream(top, dict(sorted(hashes.items())))
            self._prune(self._streams[event])

    # ---- blocks
    def _hash(self, number: int) -> str | None:
        """Hash of block ``number`` on the chain now (None: no such block)."""
        try:
            block = self.w3.eth.get_block(number)
        except Exception as exc:  # BlockNotFound and node-specific errors beyond the head
            if "not found" in str(exc).lower() or type(exc).__name__ == "BlockNotFound":
                return None
            raise
        return None if block is None else HexBytes(block["hash"]).to_0x_hex()

    def _stream(self, event: str | None) -> _Stream:
        if event is not None and event not in self._topics:
            raise ValueError(f"contract {self.address} has no event {event!r}")
        return self._streams.setdefault(event, _Stream(self.start_block - 1))

    def _prune(self, stream: _Stream) -> None:
        """Forget recorded hashes too old to matter for the depth limit."""
        floor = stream.scanned_to - self.max_reorg_depth - self.window_blocks
        for number in [n for n in stream.hashes if n < floor]:
            del stream.hashes[number]

    # ---- reorgs
    def _check(self, stream: _Stream) -> Reorg | None:
        """Keep the stream if its last scanned block is unchanged; else roll it back to the
        newest recorded block still on the chain (see the module's reorg policy)."""
        head = stream.scanned_to
        if head < self.start_block or self._hash(head) == stream.hashes.get(head):
            return None
        numbers = sorted(stream.hashes)
        # on the chain: a prefix of ``numbers`` (hashes chain blocks to their ancestors)
        lo, hi = 0, numbers.index(head)  # numbers[hi] is not on the chain
        while lo < hi:
            mid = (lo + hi) // 2
            if self._hash(numbers[mid]) == stream.hashes[numbers[mid]]:
                lo = mid + 1
            else:
                hi = mid
        ancestor = numbers[lo - 1] if lo else self.start_block - 1
        if head - ancestor > self.max_reorg_depth:
            message = (f"block {head} of {self.address} is no longer {stream.hashes[head][:10]} "
                       f"and no recorded block within {self.max_reorg_depth} blocks below it is "
                       f"on the chain (newest one still on it: {ancestor})")
            stream.scanned_to, stream.hashes, stream.logs = self.start_block - 1, {}, []
            raise ReorgTooDeepError(message + "; the stream starts over from block "
                                    f"{self.start_block} on its next read")
        cut = bisect.bisect_right(stream.logs, ancestor, key=_block_of)
        reorg = Reorg(head, ancestor, stream.hashes.get(ancestor), tuple(stream.logs[cut:]))
        del stream.logs[cut:]
        for number in numbers[lo:]:
            del stream.hashes[number]
        stream.scanned_to = ancestor
        log.warning("reorg at %s: block %d changed; back to block %d, %d logs dropped",
                    self.address, head, ancestor, len(reorg.dropped))
        return reorg

    # ---- reading
    def _read_range(self, event: str | None, stream: _Stream, start: int, end: int,
                    reorg: Reorg | None) -> ReadResult:
        """Read ``[start, end]`` in windows; take it only if the chain kept still meanwhile."""
        prev_hash = stream.hashes.get(start - 1)
        end_hash = self._hash(end)
        params: dict[str, Any] = {"address": self.address}
        if event is not None:
            params["topics"] = [self._topics[event].to_0x_hex()]
        raw: list[Any] = []
        recorded: dict[int, str | None] = {}
        for lo, hi in block_windows(start, end, self.window_blocks):
            raw.extend(self.w3.eth.get_logs({**params, "fromBlock": lo, "toBlock": hi}))
            recorded[hi] = end_hash if hi == end else self._hash(hi)
        moved = (end_hash is None or self._hash(end) != end_hash
                 or (prev_hash is not None and self._hash(start - 1) != prev_hash))
        if moved or None in recorded.values():
            return ReadResult(start, start - 1, reorg=reorg, retry=True)
        new = self._decode(raw)
        recorded.update({_block_of(e): HexBytes(e["blockHash"]).to_0x_hex() for e in new})
        hashes = {n: str(h) for n, h in sorted(recorded.items())}
        stream.hashes.update(hashes)
        stream.scanned_to = end
        if self.keep_logs:
            stream.logs.extend(new)
        self._prune(stream)
        return ReadResult(start, end, end_hash, tuple(new), hashes, reorg)

    def _decode(self, raw: list[Any]) -> list[Any]:
        """Decode logs with the contract's ABI (logs of unknown events are left out; raw with
        ``decode=False``), sorted in chain order."""
        out = []
        for entry in raw:
            topics = entry["topics"]
            event = self._events.get(HexBytes(topics[0])) if topics else None
            if event is not None:
                out.append(event.process_log(entry) if self.decode else entry)
        out.sort(key=lambda e: (_block_of(e), int(e["logIndex"])))
        return out
