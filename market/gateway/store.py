"""SQLite store of the orders the API accepted, and of their relay to the market contract.

An order is *accepted* (HTTP 201) once its row is committed here (WAL journal,
``synchronous=FULL``: the commit survives a crash of the process and of the machine). Inserts
of concurrent requests are committed together by one writer thread on its own connection
(group commit: one fsync per batch; :meth:`OrderStore.enqueue` / :meth:`OrderStore.wait`).
The relayer then sends it to ``GridMarket.submitOrdersSigned`` (in batches); a row moves

    pending -> sent (tx hash known, receipt not yet seen) -> relayed (OrderPlaced mined)
                                                          -> failed  (the contract refused it)

A partial unique index on ``(prosumer, nonce)`` over rows that did not fail makes a replayed
nonce impossible to store twice, whatever the caller checked before. An order that failed may
be submitted again unchanged (same digest): its row becomes ``pending`` again. Intervals closed
by the gateway (``closed_intervals``) take no more orders; the table survives restarts.

Units: energy Wh, prices micro-euro per kWh, times unix seconds (ints). The ``uint64`` fields
of an order (interval, energy, price, nonce, deadline) and closed interval ids are stored as the
TEXT of the decimal (``gridshare.chain.sqlite.uint64_text``), so 2**64 - 1 round-trips exactly
(SQLite INTEGER is signed 64-bit); they are only compared for equality in SQL.

``meta`` (key/value TEXT) holds what the gateway and its relay share across processes: the
chain's identity recorded on first start (``gridshare.chain.identity.ChainIdentity.as_meta``:
chain id, genesis and deployment block hashes, contract code hashes), the relay's state
(key ``relay``, JSON: state, heartbeat, counters; read by ``/healthz``) and the relay's event
cursor (key ``relay_scanned_block``).

Schema version: ``PRAGMA user_version`` (``SCHEMA``, ``MIGRATIONS``; see
``gridshare.chain.sqlite``). Step 0 -> 1 adopts a file of the code before schema versions (the
same tables, uint64 fields in INTEGER columns); step 1 -> 2 rewrites those fields as TEXT. A
value >= 2**63 that the old code stored became a rounded REAL: it keeps the value the old code
read back (precision already lost). Step 2 -> 3 adds ``meta``.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from gridshare.chain.sqlite import (
    Migration,
    Schema,
    connect,
    expect_tables,
    open_store,
    run_script,
    transaction,
    uint64_text,
)
from market.orders import Order, Side

STATUSES = ("pending", "sent", "relayed", "failed")

_SCHEMA_V2 = """
CREATE TABLE orders (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    digest TEXT NOT NULL UNIQUE,
    prosumer TEXT NOT NULL,
    interval TEXT NOT NULL,
    side INTEGER NOT NULL,
    energy_wh TEXT NOT NULL,
    price_micro_eur_per_kwh TEXT NOT NULL,
    nonce TEXT NOT NULL,
    deadline_unix_s TEXT NOT NULL,
    signature BLOB NOT NULL,
    received_unix_s REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    tx_hash TEXT,
    block_number INTEGER,
    error TEXT
);
CREATE UNIQUE INDEX orders_live_nonce ON orders (prosumer, nonce) WHERE status != 'failed';
CREATE INDEX orders_status ON orders (status, seq);
CREATE INDEX orders_interval ON orders (interval);
CREATE TABLE closed_intervals (
    interval TEXT PRIMARY KEY,
    closed_unix_s REAL NOT NULL
);
"""
_META = "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);\n"
_SCHEMA = _SCHEMA_V2 + _META

_COLUMNS = ("seq", "digest", "prosumer", "interval", "side", "energy_wh",
            "price_micro_eur_per_kwh", "nonce", "deadline_unix_s", "signature", "received_unix_s",
            "status", "tx_hash", "block_number", "error")
_UINT64_COLUMNS = ("interval", "energy_wh", "price_micro_eur_per_kwh", "nonce", "deadline_unix_s")


def _adopt_unversioned(db: sqlite3.Connection) -> None:
    """Version 0 -> 1: a file of the code before schema versions (``orders`` and
    ``closed_intervals``); nothing to change."""
    expect_tables(db, ("orders", "closed_intervals"))


def _uint64_as_text(db: sqlite3.Connection) -> None:
    """Version 1 -> 2: the uint64 fields move from INTEGER (REAL above 2**63) to TEXT columns;
    rebuilt tables keep every row, its ``seq`` and the AUTOINCREMENT counter."""
    counter = db.execute("SELECT seq FROM sqlite_sequence WHERE name='orders'").fetchone()
    for index in ("orders_live_nonce", "orders_status", "orders_interval"):
        db.execute(f"DROP INDEX {index}")
    db.execute("ALTER TABLE orders RENAME TO orders_v1")
    db.execute("ALTER TABLE closed_intervals RENAME TO closed_intervals_v1")
    run_script(db, _SCHEMA_V2)
    columns = ",".join(_COLUMNS)
    as_text = [c in _UINT64_COLUMNS for c in _COLUMNS]
    rows = [tuple(str(int(v)) if t else v for t, v in zip(as_text, r, strict=True))
            for r in db.execute(f"SELECT {columns} FROM orders_v1")]
    db.executemany(f"INSERT INTO orders ({columns}) VALUES ({','.join('?' * len(_COLUMNS))})",
                   rows)
    db.execute("INSERT INTO closed_intervals SELECT CAST(interval AS TEXT), closed_unix_s "
               "FROM closed_intervals_v1")
    db.execute("DROP TABLE orders_v1")
    db.execute("DROP TABLE closed_intervals_v1")
    if counter is not None:
        db.execute("DELETE FROM sqlite_sequence WHERE name='orders'")
        db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('orders', ?)", counter)


def _add_meta(db: sqlite3.Connection) -> None:
    """Version 2 -> 3: the ``meta`` table (chain identity, relay state)."""
    run_script(db, _META)


MIGRATIONS: tuple[Migration, ...] = (
    Migration("adopt the layout of the unversioned order store", _adopt_unversioned),
    Migration("uint64 order fields as exact TEXT", _uint64_as_text),
    Migration("meta table: chain identity and relay state", _add_meta),
)
SCHEMA = Schema("order store", application_id=0x47536F64,  # "GSod"
                create=_SCHEMA, migrations=MIGRATIONS)

_INSERT = ("INSERT INTO orders (digest, prosumer, interval, side, energy_wh, "
           "price_micro_eur_per_kwh, nonce, deadline_unix_s, signature, received_unix_s) "
           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
           # the same order again after it failed: it waits for the relay once more
           "ON CONFLICT (digest) DO UPDATE SET status = 'pending', tx_hash = NULL, "
           "block_number = NULL, error = NULL, signature = excluded.signature, "
           "received_unix_s = excluded.received_unix_s WHERE orders.status = 'failed'")
_MARK = ("UPDATE orders SET status = ?, tx_hash = COALESCE(?, tx_hash), "
         "block_number = COALESCE(?, block_number), error = ? WHERE seq = ?")


class DuplicateOrderError(ValueError):
    """The order (same digest) or the prosumer's nonce is already stored."""


def _duplicate(order: Order, digest: bytes) -> DuplicateOrderError:
    return DuplicateOrderError(
        f"order 0x{digest.hex()} or nonce {order.nonce} of {order.prosumer} is already stored")


def _insert(db: sqlite3.Connection, row: tuple) -> int | None:
    """Insert ``row`` (or revive the failed order with its digest); its seq, None when the
    digest is stored and not failed."""
    cur = db.execute(_INSERT, row)
    if cur.rowcount == 0:
        return None
    found = db.execute("SELECT seq FROM orders WHERE digest = ?", (row[0],)).fetchone()
    return int(found[0])


def _row(order: Order, digest: bytes, signature: bytes, received_unix_s: float) -> tuple:
    return ("0x" + digest.hex(), order.prosumer, uint64_text(order.interval), int(order.side),
            uint64_text(order.energy_wh), uint64_text(order.price_micro_eur_per_kwh),
            uint64_text(order.nonce), uint64_text(order.deadline_unix_s), bytes(signature),
            float(received_unix_s))


@dataclass
class _Pending:
    """An insert waiting for the group commit."""

    row: tuple
    order: Order
    digest: bytes
    done: threading.Event = field(default_factory=threading.Event)
    on_done: Callable[[], None] | None = None
    seq: int = 0
    error: Exception | None = None


@dataclass(frozen=True)
class StoredOrder:
    """One row of ``orders``."""

    seq: int
    digest: bytes
    order: Order
    signature: bytes
    received_unix_s: float
    status: str
    tx_hash: str | None
    block_number: int | None
    error: str | None


class OrderStore:
    """Thread-safe access to one SQLite file (``":memory:"`` for a throw-away store)."""

    def __init__(self, path: str | Path, durable_status: bool = True) -> None:
        self.path = str(path)
        # inserts go through the writer connection (FULL); status updates may use NORMAL (a
        # lost update is re-derived from the chain by the relayer). No busy timeout: the
        # relay process's transactions take about a millisecond, and transaction() retries
        # BEGIN IMMEDIATE every 0.5 ms, where SQLite's busy handler would back off to 100 ms.
        self._db = open_store(self.path, SCHEMA, busy_timeout_s=0.0,
                              synchronous="FULL" if durable_status else "NORMAL")
        self._lock = threading.RLock()
        self._wdb: sqlite3.Connection | None = None
        if self.path != ":memory:":
            self._wdb = connect(self.path, synchronous="FULL", busy_timeout_s=0.0)
        self._group = threading.Condition()
        self._queue: list[_Pending] = []
        self._writer: threading.Thread | None = None
        self._closing = False

    def close(self) -> None:
        with self._group:
            self._closing = True
            self._group.notify_all()
        if self._writer is not None:
            self._writer.join(10)
        with self._lock:
            self._db.close()
            if self._wdb is not None:
                self._wdb.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock, transaction(self._db) as db:
            yield db

    @contextmanager
    def _write_tx(self) -> Iterator[sqlite3.Connection]:
        """A transaction on the group-commit writer's own connection (a file store), so reads
        on the main connection do not wait for the writer's fsync."""
        if self._wdb is None:
            with self._tx() as db:
                yield db
            return
        with transaction(self._wdb) as db:
            yield db

    # ---- writes
    def insert(self, order: Order, digest: bytes, signature: bytes, received_unix_s: float) -> int:
        """Store an accepted order durably; returns its sequence number (FIFO relay order)."""
        try:
            with self._tx() as db:
                seq = _insert(db, _row(order, digest, signature, received_unix_s))
        except sqlite3.IntegrityError as exc:
            raise _duplicate(order, digest) from exc
        if seq is None:
            raise _duplicate(order, digest)
        return seq

    def insert_grouped(self, order: Order, digest: bytes, signature: bytes,
                       received_unix_s: float, timeout_s: float = 30.0) -> int:
        """Like :meth:`insert`, but committed together with the inserts of other threads
        waiting at the same time (group commit: one fsync per batch). Rows are inserted in
        the order the calls arrived. Returns once the row is committed."""
        return self.wait(self.enqueue(order, digest, signature, received_unix_s), timeout_s)

    def enqueue(self, order: Order, digest: bytes, signature: bytes, received_unix_s: float,
                on_done: Callable[[], None] | None = None) -> _Pending:
        """Queue an insert for the next group commit (see :meth:`insert_grouped`);
        ``on_done`` is called from the writer thread once it is committed (or failed)."""
        item = _Pending(_row(order, digest, signature, received_unix_s), order, digest,
                        on_done=on_done)
        with self._group:
            if self._closing:
                raise RuntimeError("order store is closed")
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_loop, name="order-writer",
                                                daemon=True)
                self._writer.start()
            self._queue.append(item)
            self._group.notify_all()
        return item

    @staticmethod
    def wait(item: _Pending, timeout_s: float = 30.0) -> int:
        """Block until the queued insert is committed; its sequence number."""
        if not item.done.wait(timeout_s):
            raise TimeoutError(f"order store did not commit within {timeout_s} s")
        if item.error is not None:
            raise item.error
        return item.seq

    def _write_loop(self) -> None:
        while True:
            with self._group:
                while not self._queue and not self._closing:
                    self._group.wait()
                if not self._queue:
                    return
                batch, self._queue = self._queue, []
            try:
                with self._write_tx() as db:
                    for item in batch:
                        try:
                            seq = _insert(db, item.row)
                        except sqlite3.IntegrityError:
                            seq = None
                        if seq is None:
                            item.error = _duplicate(item.order, item.digest)
                        else:
                            item.seq = seq
            except Exception as exc:  # the commit failed: nothing of the batch is stored
                for item in batch:
                    item.error = RuntimeError(f"order store commit failed: {exc}")
            for item in batch:
                item.done.set()
                if item.on_done is not None:
                    # RuntimeError: the waiter's event loop is gone (shutdown)
                    with contextlib.suppress(RuntimeError):
                        item.on_done()

    def mark_many(self, updates: Sequence[tuple[int, str, dict[str, object]]]) -> None:
        """Several :meth:`mark` calls in one transaction: ``(seq, status, fields)``."""
        for _, status, _ in updates:
            if status not in STATUSES:
                raise ValueError(f"unknown order status {status!r}; expected one of {STATUSES}")
        if not updates:
            return
        with self._tx() as db:
            db.executemany(_MARK, [(status, f.get("tx_hash"), f.get("block_number"),
                                    f.get("error"), int(seq)) for seq, status, f in updates])

    def mark(self, seq: int, status: str, *, tx_hash: str | None = None,
             block_number: int | None = None, error: str | None = None) -> None:
        """Move order ``seq`` to ``status`` (keeps an earlier tx hash when none is given)."""
        if status not in STATUSES:
            raise ValueError(f"unknown order status {status!r}; expected one of {STATUSES}")
        with self._tx() as db:
            db.execute(_MARK, (status, tx_hash, block_number, error, int(seq)))

    def back_to_sent(self, seqs: Sequence[int]) -> None:
        """Orders whose block a reorg dropped: ``sent`` again, block unknown."""
        if not seqs:
            return
        with self._tx() as db:
            db.executemany("UPDATE orders SET status = 'sent', block_number = NULL WHERE seq = ?",
                           [(int(s),) for s in seqs])

    def set_meta(self, items: Mapping[str, str]) -> None:
        """Insert or replace ``meta`` rows (one transaction)."""
        with self._tx() as db:
            db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                           [(str(k), str(v)) for k, v in items.items()])

    def close_interval(self, interval: int, now_unix_s: float) -> None:
        """Take no more orders for ``interval`` (idempotent)."""
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO closed_intervals VALUES (?, ?)",
                       (uint64_text(interval), float(now_unix_s)))

    # ---- reads
    def closed_intervals(self) -> list[int]:
        with self._lock:
            return [int(r[0]) for r in self._db.execute("SELECT interval FROM closed_intervals")]

    def is_closed(self, interval: int) -> bool:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM closed_intervals WHERE interval = ?",
                                   (uint64_text(interval),)).fetchone()
        return row is not None

    def next_nonce(self, prosumer: str) -> int | None:
        """One more than the highest nonce of ``prosumer`` among live (not failed) rows."""
        with self._lock:
            rows = self._db.execute(
                "SELECT nonce FROM orders WHERE prosumer = ? AND status != 'failed'",
                (prosumer,)).fetchall()
        return max(int(r[0]) for r in rows) + 1 if rows else None

    def meta(self) -> dict[str, str]:
        """Every ``meta`` row."""
        with self._lock:
            return {str(k): str(v) for k, v in self._db.execute("SELECT key, value FROM meta")}

    def count_of(self, prosumer: str, interval: int) -> int:
        """How many orders of ``prosumer`` for ``interval`` were stored (any status)."""
        with self._lock:
            row = self._db.execute("SELECT COUNT(*) FROM orders WHERE interval = ? AND "
                                   "prosumer = ?", (uint64_text(interval), prosumer)).fetchone()
        return int(row[0])

    def of_prosumer(self, prosumer: str, limit: int, status: str | None = None
                    ) -> list[StoredOrder]:
        """The newest ``limit`` orders of ``prosumer`` (of one status, or all), newest first."""
        if status is None:
            return self._select("WHERE prosumer = ? ORDER BY seq DESC LIMIT ?",
                                (prosumer, int(limit)))
        return self._select("WHERE prosumer = ? AND status = ? ORDER BY seq DESC LIMIT ?",
                            (prosumer, status, int(limit)))

    def mined_after(self, block: int) -> list[StoredOrder]:
        """``sent`` and ``relayed`` orders recorded in a block after ``block`` (a reorg)."""
        return self._select("WHERE block_number > ? AND status IN ('sent', 'relayed') "
                            "ORDER BY seq", (int(block),))

    def with_status(self, status: str, limit: int) -> list[StoredOrder]:
        """Orders in ``status``, oldest first."""
        return self._select("WHERE status = ? ORDER BY seq LIMIT ?", (status, int(limit)))

    def unfinished(self, limit: int = 200) -> list[StoredOrder]:
        """Pending and sent orders, oldest first."""
        return self._select("WHERE status IN ('pending', 'sent') ORDER BY seq LIMIT ?",
                            (int(limit),))

    def by_digest(self, digest: bytes) -> StoredOrder | None:
        rows = self._select("WHERE digest = ?", ("0x" + bytes(digest).hex(),))
        return rows[0] if rows else None

    def of_interval(self, interval: int) -> list[StoredOrder]:
        return self._select("WHERE interval = ? ORDER BY seq", (uint64_text(interval),))

    def counts(self, interval: int | None = None) -> dict[str, int]:
        """Number of orders per status (of one interval, or of all)."""
        where, args = ("WHERE interval = ?", (uint64_text(interval),)) if interval is not None \
            else ("", ())
        with self._lock:
            rows = self._db.execute(
                f"SELECT status, COUNT(*) FROM orders {where} GROUP BY status", args).fetchall()
        out = dict.fromkeys(STATUSES, 0)
        out.update({str(s): int(n) for s, n in rows})
        return out

    def oldest_unfinished_unix_s(self) -> float | None:
        with self._lock:
            row = self._db.execute("SELECT MIN(received_unix_s) FROM orders WHERE status IN "
                                   "('pending', 'sent')").fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def _select(self, tail: str, args: Sequence[object]) -> list[StoredOrder]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, digest, prosumer, interval, side, energy_wh, "
                "price_micro_eur_per_kwh, nonce, deadline_unix_s, signature, received_unix_s, "
                f"status, tx_hash, block_number, error FROM orders {tail}", tuple(args)
            ).fetchall()
        out = []
        for r in rows:
            order = Order(r[2], int(r[3]), Side(int(r[4])), int(r[5]), int(r[6]), int(r[7]),
                          int(r[8]))
            out.append(StoredOrder(int(r[0]), bytes.fromhex(r[1][2:]), order, bytes(r[9]),
                                   float(r[10]), str(r[11]), r[12],
                                   None if r[13] is None else int(r[13]), r[14]))
        return out
