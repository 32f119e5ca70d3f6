"""SQLite store of the orders the API accepted, and of their relay to the market contract.

An order is *accepted* (HTTP 201) once its row is committed here (WAL journal,
``synchronous=FULL``: the commit survives a crash of the process and of the machine). The
relayer then sends it to ``GridMarket.submitOrderSigned``; a row moves

    pending -> sent (tx hash known, receipt not yet seen) -> relayed (OrderPlaced mined)
                                                          -> failed  (the contract refused it)

A partial unique index on ``(prosumer, nonce)`` over rows that did not fail makes a replayed
nonce impossible to store twice, whatever the caller checked before. Intervals closed by the
gateway (``closed_intervals``) take no more orders; the table survives restarts.

Units: energy Wh, prices micro-euro per kWh, times unix seconds (ints).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from market.orders import Order, Side

STATUSES = ("pending", "sent", "relayed", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    digest TEXT NOT NULL UNIQUE,
    prosumer TEXT NOT NULL,
    interval INTEGER NOT NULL,
    side INTEGER NOT NULL,
    energy_wh INTEGER NOT NULL,
    price_micro_eur_per_kwh INTEGER NOT NULL,
    nonce INTEGER NOT NULL,
    deadline_unix_s INTEGER NOT NULL,
    signature BLOB NOT NULL,
    received_unix_s REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    tx_hash TEXT,
    block_number INTEGER,
    error TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS orders_live_nonce ON orders (prosumer, nonce)
    WHERE status != 'failed';
CREATE INDEX IF NOT EXISTS orders_status ON orders (status, seq);
CREATE INDEX IF NOT EXISTS orders_interval ON orders (interval);
CREATE TABLE IF NOT EXISTS closed_intervals (
    interval INTEGER PRIMARY KEY,
    closed_unix_s REAL NOT NULL
);
"""

# SQLite INTEGER is a signed 64-bit int; uint64 fields above 2^63 - 1 are stored as text.
_I64_MAX = 2**63 - 1


def _int_col(value: int) -> int | str:
    return value if value <= _I64_MAX else str(value)


class DuplicateOrderError(ValueError):
    """The order (same digest) or the prosumer's nonce is already stored."""


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

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.RLock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # ---- writes
    def insert(self, order: Order, digest: bytes, signature: bytes, received_unix_s: float) -> int:
        """Store an accepted order durably; returns its sequence number (FIFO relay order)."""
        row = (
            "0x" + digest.hex(), order.prosumer, _int_col(order.interval), int(order.side),
            _int_col(order.energy_wh), _int_col(order.price_micro_eur_per_kwh),
            _int_col(order.nonce), _int_col(order.deadline_unix_s), bytes(signature),
            float(received_unix_s),
        )
        try:
            with self._tx() as db:
                cur = db.execute(
                    "INSERT INTO orders (digest, prosumer, interval, side, energy_wh, "
                    "price_micro_eur_per_kwh, nonce, deadline_unix_s, signature, "
                    "received_unix_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
                return int(cur.lastrowid or 0)
        except sqlite3.IntegrityError as exc:
            raise DuplicateOrderError(
                f"order 0x{digest.hex()} or nonce {order.nonce} of {order.prosumer} is already "
                "stored"
            ) from exc

    def mark(self, seq: int, status: str, *, tx_hash: str | None = None,
             block_number: int | None = None, error: str | None = None) -> None:
        """Move order ``seq`` to ``status`` (keeps an earlier tx hash when none is given)."""
        if status not in STATUSES:
            raise ValueError(f"unknown order status {status!r}; expected one of {STATUSES}")
        with self._tx() as db:
            db.execute(
                "UPDATE orders SET status = ?, tx_hash = COALESCE(?, tx_hash), "
                "block_number = COALESCE(?, block_number), error = ? WHERE seq = ?",
                (status, tx_hash, block_number, error, int(seq)))

    def close_interval(self, interval: int, now_unix_s: float) -> None:
        """Take no more orders for ``interval`` (idempotent)."""
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO closed_intervals VALUES (?, ?)",
                       (_int_col(int(interval)), float(now_unix_s)))

    # ---- reads
    def is_closed(self, interval: int) -> bool:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM closed_intervals WHERE interval = ?",
                                   (_int_col(int(interval)),)).fetchone()
        return row is not None

    def next_nonce(self, prosumer: str) -> int | None:
        """One more than the highest nonce of ``prosumer`` among live (not failed) rows."""
        with self._lock:
            rows = self._db.execute(
                "SELECT nonce FROM orders WHERE prosumer = ? AND status != 'failed'",
                (prosumer,)).fetchall()
        return max(int(r[0]) for r in rows) + 1 if rows else None

    def unfinished(self, limit: int = 200) -> list[StoredOrder]:
        """Pending and sent orders, oldest first."""
        return self._select("WHERE status IN ('pending', 'sent') ORDER BY seq LIMIT ?",
                            (int(limit),))

    def by_digest(self, digest: bytes) -> StoredOrder | None:
        rows = self._select("WHERE digest = ?", ("0x" + bytes(digest).hex(),))
        return rows[0] if rows else None

    def of_interval(self, interval: int) -> list[StoredOrder]:
        return self._select("WHERE interval = ? ORDER BY seq", (_int_col(int(interval)),))

    def counts(self, interval: int | None = None) -> dict[str, int]:
        """Number of orders per status (of one interval, or of all)."""
        where, args = ("WHERE interval = ?", (_int_col(int(interval)),)) if interval is not None \
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
