"""The oracle's SQLite store: ingestion cursor, readings, rejections, processed intervals.

Tables (all integers on-chain units: W, var, micro-pu, micro-rad, unix s):

* ``meta``: key/value; binds the database to one deployment (chain id, capacity address, feeder)
  so an oracle never mixes two deployments' data, and records the chain's identity (genesis
  hash, contract code hashes: ``gridshare.chain.identity``) so a reset node is recognised.
* ``cursor``: one row, the last processed block (number and hash).
* ``blocks``: hashes of processed blocks (every cursor block and every block with an event), the
  reference for reorg detection by hash continuity.
* ``readings``: accepted meter readings, primary key ``(tx_hash, log_index, position)`` (the
  event plus the record's position in its packed blob), so reading a log twice is harmless; one
  accepted reading per ``(device_id, timestamp)``.
* ``rejected``: readings that were refused, with the rule they broke (``oracle.registry.RULES``)
  and the reason, same key.
* ``intervals``: one row per target interval the oracle handled: ``written`` (tx hash, block,
  inputs hash, the canonical inputs and the bands), ``sent`` (tx sent, receipt not yet seen) or
  ``skipped`` (with the reason; see docs/oracle.md for when); the Newton-Raphson check's counts
  (points, failed points, narrowing rounds) and ``stale_reason`` when a reorg changed the inputs
  of a band that stays on chain.
* ``tx_failures``: every failed band transaction (revert or RPC error) and what was done.
* ``sessions``: vehicle sessions declared by the stations' meters (``oracle.sessions``), accepted
  (``rule`` NULL) or rejected (the rule and reason), keyed like ``readings``.

Writes happen in short transactions (``gridshare.chain.sqlite.transaction``: ``BEGIN
IMMEDIATE`` .. ``COMMIT``) so a crash leaves either all or none of one ingestion step.

Schema version: ``PRAGMA user_version`` (``SCHEMA``, ``MIGRATIONS``; see
``gridshare.chain.sqlite``). Version 3 is the layout above; step 0 -> 1 adopts a file of the code
before schema versions (``meta`` ``schema`` = "1", which the version replaces); step 1 -> 2
rebuilds ``readings`` (no stored ``late`` flag: ``Store.counts`` computes it), ``rejected`` (+
``rule``) and ``intervals`` (+ NR counts, ``stale_reason``), keeping every row; step 2 -> 3
adds the empty ``sessions`` table.

Integers are SQLite INTEGER (signed 64-bit) and stay below 2**63 by construction: the readings'
fields are 32-bit in the packed layout, interval ids are unix seconds // interval length, block
numbers and counts are small. A larger value (say a uint64 interval id >= 2**63) is refused by
sqlite3 with ``OverflowError`` and its transaction rolls back: never stored rounded.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gridshare.chain.sqlite import (
    Migration,
    Schema,
    StoreVersionError,
    UnknownLayoutError,
    expect_tables,
    open_store,
    transaction,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cursor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    block_number INTEGER NOT NULL,
    block_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS blocks (number INTEGER PRIMARY KEY, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS readings (
    tx_hash TEXT NOT NULL, log_index INTEGER NOT NULL, position INTEGER NOT NULL,
    block_number INTEGER NOT NULL, block_hash TEXT NOT NULL, meter TEXT NOT NULL,
    device_id INTEGER NOT NULL, timestamp INTEGER NOT NULL,
    p_w INTEGER NOT NULL, q_var INTEGER NOT NULL, v_micro_pu INTEGER NOT NULL,
    theta_micro_rad INTEGER NOT NULL,
    PRIMARY KEY (tx_hash, log_index, position)
);
CREATE UNIQUE INDEX IF NOT EXISTS readings_device_time ON readings (device_id, timestamp);
CREATE INDEX IF NOT EXISTS readings_time ON readings (timestamp);
CREATE INDEX IF NOT EXISTS readings_block ON readings (block_number);
CREATE TABLE IF NOT EXISTS rejected (
    tx_hash TEXT NOT NULL, log_index INTEGER NOT NULL, position INTEGER NOT NULL,
    block_number INTEGER NOT NULL, meter TEXT NOT NULL, device_id INTEGER NOT NULL,
    timestamp INTEGER NOT NULL, p_w INTEGER NOT NULL, q_var INTEGER NOT NULL,
    v_micro_pu INTEGER NOT NULL, theta_micro_rad INTEGER NOT NULL, reason TEXT NOT NULL,
    rule TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (tx_hash, log_index, position)
);
CREATE INDEX IF NOT EXISTS rejected_block ON rejected (block_number);
CREATE TABLE IF NOT EXISTS intervals (
    interval INTEGER PRIMARY KEY, source_interval INTEGER NOT NULL, status TEXT NOT NULL,
    tx_hash TEXT, block_number INTEGER, inputs_hash TEXT, inputs_json TEXT, bands_json TEXT,
    n_readings INTEGER NOT NULL DEFAULT 0, n_missing INTEGER NOT NULL DEFAULT 0,
    missing_json TEXT, infeasible_steps INTEGER NOT NULL DEFAULT 0,
    n_steps INTEGER NOT NULL DEFAULT 0, reason TEXT, computed_at REAL, written_at REAL,
    latency_s REAL, nr_points INTEGER NOT NULL DEFAULT 0, nr_failed INTEGER NOT NULL DEFAULT 0,
    nr_narrowed INTEGER NOT NULL DEFAULT 0, stale_reason TEXT
);
CREATE TABLE IF NOT EXISTS sessions (
    tx_hash TEXT NOT NULL, log_index INTEGER NOT NULL, position INTEGER NOT NULL,
    block_number INTEGER NOT NULL, meter TEXT NOT NULL, device_id INTEGER NOT NULL,
    arrive_s INTEGER NOT NULL, depart_s INTEGER NOT NULL, energy_wh INTEGER NOT NULL,
    rule TEXT, reason TEXT,
    PRIMARY KEY (tx_hash, log_index, position)
);
CREATE INDEX IF NOT EXISTS sessions_arrive ON sessions (arrive_s);
CREATE INDEX IF NOT EXISTS sessions_block ON sessions (block_number);
CREATE TABLE IF NOT EXISTS tx_failures (
    id INTEGER PRIMARY KEY AUTOINCREMENT, interval INTEGER NOT NULL, at REAL NOT NULL,
    attempt INTEGER NOT NULL, error TEXT NOT NULL, tx_hash TEXT, action TEXT NOT NULL
);
"""

_TABLES = ("meta", "cursor", "blocks", "readings", "rejected", "intervals", "tx_failures")
#: ``sessions`` rows (``rule``/``reason`` None: accepted; see ``oracle.sessions``).
SESSION_COLUMNS = ("tx_hash", "log_index", "position", "block_number", "meter", "device_id",
                   "arrive_s", "depart_s", "energy_wh", "rule", "reason")
READING_COLUMNS = ("tx_hash", "log_index", "position", "block_number", "block_hash", "meter",
                   "device_id", "timestamp", "p_w", "q_var", "v_micro_pu", "theta_micro_rad")
REJECTED_COLUMNS = ("tx_hash", "log_index", "position", "block_number", "meter", "device_id",
                    "timestamp", "p_w", "q_var", "v_micro_pu", "theta_micro_rad", "reason", "rule")


def _adopt_unversioned(db: sqlite3.Connection) -> None:
    """Version 0 -> 1: a file of the code before schema versions (the tables of version 1 and
    ``meta`` ``schema`` = "1"); the ``schema`` row goes, ``user_version`` replaces it."""
    expect_tables(db, _TABLES)
    row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
    if row is None or row[0] != "1":
        raise UnknownLayoutError(f"meta schema = {None if row is None else row[0]!r}, "
                                 "expected '1'")
    db.execute("DELETE FROM meta WHERE key='schema'")


def _statements_of(table: str) -> list[str]:
    """The newest DDL of ``table``: its CREATE TABLE and CREATE INDEX statements."""
    out = []
    for statement in _SCHEMA.split(";"):
        text = statement.strip()
        if text.startswith(f"CREATE TABLE IF NOT EXISTS {table} (") or f" ON {table} (" in text:
            out.append(text)
    return out


def _rebuild(db: sqlite3.Connection, table: str, values: str) -> None:
    """Rebuild ``table`` with its newest DDL (text identical to a new file's), copying each row
    with the SELECT expressions ``values`` (in the new column order) from the old table."""
    indexes = db.execute("SELECT name FROM sqlite_master WHERE type='index' AND tbl_name=? "
                         "AND sql IS NOT NULL", (table,)).fetchall()
    for (name,) in indexes:
        db.execute(f"DROP INDEX {name}")
    db.execute(f"ALTER TABLE {table} RENAME TO old_{table}")
    for statement in _statements_of(table):
        db.execute(statement)
    db.execute(f"INSERT INTO {table} SELECT {values} FROM old_{table}")
    db.execute(f"DROP TABLE old_{table}")


def _v2_rules_nr_stale(db: sqlite3.Connection) -> None:
    """Version 1 -> 2: ``readings`` loses ``late`` (a reading is late when it is on chain after
    the band it would have fed: computed, not stored); ``rejected`` gets the ``rule`` it broke
    ('' for older rows); ``intervals`` gets the NR check's counts and ``stale_reason``."""
    _rebuild(db, "readings", ",".join(READING_COLUMNS))
    _rebuild(db, "rejected", ",".join(REJECTED_COLUMNS[:-1]) + ",''")
    _rebuild(db, "intervals", "*, 0, 0, 0, NULL")


def _v3_sessions(db: sqlite3.Connection) -> None:
    """Version 2 -> 3: the ``sessions`` table (vehicle sessions declared on chain), empty: the
    oracle reads the declarations of blocks after its cursor only, so an older store sees the
    sessions declared from now on."""
    for statement in _statements_of("sessions"):
        db.execute(statement)


MIGRATIONS: tuple[Migration, ...] = (
    Migration("adopt the layout of the unversioned oracle store", _adopt_unversioned),
    Migration("reading rules, NR check counts, stale bands; late computed", _v2_rules_nr_stale),
    Migration("vehicle sessions declared by the stations' meters", _v3_sessions),
)
SCHEMA = Schema("oracle store", application_id=0x47536F72,  # "GSor"
                create=_SCHEMA, migrations=MIGRATIONS)



def _open_read_only(path: str) -> sqlite3.Connection:
    """A read-only connection to an existing store file at the newest schema version."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no oracle database at {path}")
    db = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True,
                         check_same_thread=False)
    app = int(db.execute("PRAGMA application_id").fetchone()[0])
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if (app, version) != (SCHEMA.application_id, SCHEMA.version):
        db.close()
        raise StoreVersionError(
            f"{path} is not an oracle store at schema version {SCHEMA.version} (application_id "
            f"{app:#x}, version {version}): run `gridshare oracle run` once to migrate it")
    return db


class StoreMismatchError(ValueError):
    """The database belongs to another deployment (names the differing key)."""


@dataclass(frozen=True)
class Cursor:
    """Last processed block."""

    block_number: int
    block_hash: str


@dataclass(frozen=True)
class IntervalRow:
    """One row of ``intervals`` (see the module docstring)."""

    interval: int
    source_interval: int
    status: str
    tx_hash: str | None
    block_number: int | None
    inputs_hash: str | None
    inputs_json: str | None
    bands_json: str | None
    n_readings: int
    n_missing: int
    missing_json: str | None
    infeasible_steps: int
    n_steps: int
    reason: str | None
    computed_at: float | None
    written_at: float | None
    latency_s: float | None
    nr_points: int = 0
    nr_failed: int = 0
    nr_narrowed: int = 0
    stale_reason: str | None = None

    @property
    def inputs(self) -> dict[str, Any]:
        """The canonical inputs (parsed)."""
        return json.loads(self.inputs_json or "{}")

    @property
    def bands(self) -> dict[str, Any]:
        """The bands written: ``{"device_ids": [...], "p_min_w": [...], "p_max_w": [...]}``."""
        return json.loads(self.bands_json or "{}")


class Store:
    """The oracle's SQLite database (one file per oracle; ``":memory:"`` for tests).

    ``read_only``: opened with SQLite's ``mode=ro`` (``gridshare oracle status`` next to a
    running oracle): nothing is created, migrated or written; a missing file raises
    ``FileNotFoundError``, a file at another schema version ``StoreVersionError``.
    """

    def __init__(self, path: str | Path, read_only: bool = False) -> None:
        self.path = str(path)
        self.db = _open_read_only(self.path) if read_only else open_store(self.path, SCHEMA)
        self.db.row_factory = sqlite3.Row

    def close(self) -> None:
        self.db.close()

    # ---- meta
    def bind(self, values: Mapping[str, str]) -> None:
        """Record ``values`` on first use; later, raise StoreMismatchError if any differs."""
        with transaction(self.db):
            missing = self._unbound(values)
            self.db.executemany("INSERT INTO meta VALUES (?, ?)",
                                [(k, str(values[k])) for k in missing])

    def check_binding(self, values: Mapping[str, str]) -> None:
        """StoreMismatchError if a recorded value differs from ``values`` (writes nothing)."""
        self._unbound(values)

    def _unbound(self, values: Mapping[str, str]) -> list[str]:
        """The keys of ``values`` not recorded yet; StoreMismatchError if one recorded differs."""
        missing = []
        for key, value in values.items():
            row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
            if row is None:
                missing.append(key)
            elif row["value"] != str(value):
                raise StoreMismatchError(
                    f"oracle database {self.path} belongs to {key}={row['value']}, "
                    f"not {key}={value}: use another --db file"
                )
        return missing

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row["value"])

    def meta_items(self) -> dict[str, str]:
        """Every ``meta`` key and value."""
        return {str(r[0]): str(r[1]) for r in self.db.execute("SELECT key, value FROM meta")}

    # ---- cursor and blocks
    def cursor(self) -> Cursor | None:
        row = self.db.execute("SELECT block_number, block_hash FROM cursor WHERE id=1").fetchone()
        return None if row is None else Cursor(int(row[0]), str(row[1]))

    def block_hashes_desc(self, below_or_at: int) -> list[tuple[int, str]]:
        """Stored (number, hash) pairs at or below ``below_or_at``, newest first."""
        rows = self.db.execute(
            "SELECT number, hash FROM blocks WHERE number<=? ORDER BY number DESC", (below_or_at,)
        ).fetchall()
        return [(int(r[0]), str(r[1])) for r in rows]

    def commit_range(
        self,
        cursor: Cursor,
        block_hashes: Mapping[int, str],
        readings: Sequence[Sequence[Any]],
        rejected: Sequence[Sequence[Any]],
        keep_blocks: int = 2048,
        sessions: Sequence[Sequence[Any]] = (),
    ) -> tuple[int, int]:
        """Store one ingested block range atomically; returns (new readings, new rejections).

        ``readings`` / ``rejected`` / ``sessions`` are rows in ``READING_COLUMNS`` /
        ``REJECTED_COLUMNS`` / ``SESSION_COLUMNS`` order. Rows whose key exists are ignored
        (re-reading a log is harmless).
        """
        with transaction(self.db):
            if sessions:
                self.db.executemany(
                    f"INSERT OR IGNORE INTO sessions ({','.join(SESSION_COLUMNS)}) "
                    f"VALUES ({','.join('?' * len(SESSION_COLUMNS))})", sessions)
            n_new = self.db.executemany(
                f"INSERT OR IGNORE INTO readings ({','.join(READING_COLUMNS)}) "
                f"VALUES ({','.join('?' * len(READING_COLUMNS))})", readings,
            ).rowcount if readings else 0
            n_rej = self.db.executemany(
                f"INSERT OR IGNORE INTO rejected ({','.join(REJECTED_COLUMNS)}) "
                f"VALUES ({','.join('?' * len(REJECTED_COLUMNS))})", rejected,
            ).rowcount if rejected else 0
            hashes = {**block_hashes, cursor.block_number: cursor.block_hash}
            self.db.executemany("INSERT OR REPLACE INTO blocks VALUES (?, ?)",
                                sorted(hashes.items()))
            self.db.execute("DELETE FROM blocks WHERE number < ?",
                            (cursor.block_number - keep_blocks,))
            self.db.execute("INSERT OR REPLACE INTO cursor VALUES (1, ?, ?)",
                            (cursor.block_number, cursor.block_hash))
        return max(n_new, 0), max(n_rej, 0)

    def rewind(self, ancestor: Cursor | None) -> tuple[int, int]:
        """Forget everything above ``ancestor`` (None: everything); returns (readings, rejected)
        deleted."""
        above = -1 if ancestor is None else ancestor.block_number
        with transaction(self.db):
            n_read = self.db.execute("DELETE FROM readings WHERE block_number > ?",
                                     (above,)).rowcount
            n_rej = self.db.execute("DELETE FROM rejected WHERE block_number > ?",
                                    (above,)).rowcount
            self.db.execute("DELETE FROM sessions WHERE block_number > ?", (above,))
            self.db.execute("DELETE FROM blocks WHERE number > ?", (above,))
            if ancestor is None:
                self.db.execute("DELETE FROM cursor")
            else:
                self.db.execute("INSERT OR REPLACE INTO cursor VALUES (1, ?, ?)",
                                (ancestor.block_number, ancestor.block_hash))
        return n_read, n_rej

    # ---- vehicle sessions
    def sessions_between(self, start_s: int, end_s: int, max_session_s: int
                         ) -> list[dict[str, int]]:
        """Every accepted declaration of a session that arrives in ``(start_s - max_session_s,
        end_s)`` (so may overlap ``[start_s, end_s)``), in chain order;
        ``oracle.sessions.connected_stations`` takes the latest of each."""
        rows = self.db.execute(
            "SELECT block_number, log_index, position, device_id, arrive_s, depart_s, energy_wh "
            "FROM sessions WHERE rule IS NULL AND arrive_s > ? AND arrive_s < ? "
            "ORDER BY block_number, log_index, position",
            (start_s - max_session_s, end_s)).fetchall()
        return [dict(r) for r in rows]

    def rejected_sessions(self) -> list[sqlite3.Row]:
        """Declared sessions that broke a rule (``oracle.sessions.SESSION_RULES``), in chain
        order."""
        return self.db.execute("SELECT * FROM sessions WHERE rule IS NOT NULL "
                               "ORDER BY block_number, log_index, position").fetchall()

    # ---- readings
    def accepted_keys(self, timestamps: Sequence[int], chunk: int = 500
                      ) -> dict[int, tuple[str, int, int]]:
        """Accepted readings at ``timestamps``: ``(device_id << 32 | timestamp)`` -> their key
        ``(tx_hash, log_index, position)``."""
        out: dict[int, tuple[str, int, int]] = {}
        values = [int(t) for t in timestamps]
        for i in range(0, len(values), chunk):
            part = values[i:i + chunk]
            rows = self.db.execute(
                "SELECT device_id, timestamp, tx_hash, log_index, position FROM readings "
                f"WHERE timestamp IN ({','.join('?' * len(part))})", part,
            ).fetchall()
            for r in rows:
                out[(int(r[0]) << 32) | int(r[1])] = (str(r[2]), int(r[3]), int(r[4]))
        return out

    def readings_between(self, start_s: int, end_s: int) -> list[sqlite3.Row]:
        """Accepted readings with ``start_s <= timestamp < end_s``, by device then time."""
        return self.db.execute(
            "SELECT * FROM readings WHERE timestamp >= ? AND timestamp < ? "
            "ORDER BY device_id, timestamp", (int(start_s), int(end_s)),
        ).fetchall()

    def power_sums(self, device_id: int, start_s: int, end_s: int, interval_s: int
                   ) -> dict[int, int]:
        """Per interval (``timestamp // interval_s``), the sum of ``device_id``'s accepted P
        readings (W) with ``start_s <= timestamp < end_s``."""
        rows = self.db.execute(
            "SELECT timestamp / ? AS k, SUM(p_w) FROM readings WHERE device_id = ? AND "
            "timestamp >= ? AND timestamp < ? GROUP BY k",
            (int(interval_s), int(device_id), int(start_s), int(end_s))).fetchall()
        return {int(k): int(total) for k, total in rows}

    def last_readings_before(self, start_s: int) -> dict[int, sqlite3.Row]:
        """Per device, its latest accepted reading with ``timestamp < start_s``."""
        rows = self.db.execute(
            "SELECT r.* FROM readings r JOIN (SELECT device_id, MAX(timestamp) AS ts FROM readings "
            "WHERE timestamp < ? GROUP BY device_id) m ON r.device_id = m.device_id "
            "AND r.timestamp = m.ts", (start_s,),
        ).fetchall()
        return {int(r["device_id"]): r for r in rows}

    def rejected_rows(self) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM rejected ORDER BY block_number, log_index, "
                               "position").fetchall()

    def counts(self, interval_s: int) -> dict[str, Any]:
        """Numbers of accepted, late and rejected readings, and the rejections per rule.

        Late: on chain in a later block than the written band of the interval its interval was
        the source of (``timestamp // interval_s + 1``), so it could not count."""
        one = self.db.execute
        late = one("SELECT COUNT(*) FROM readings r JOIN intervals i "
                   "ON i.interval = r.timestamp / ? + 1 WHERE i.status = 'written' "
                   "AND i.block_number IS NOT NULL AND r.block_number > i.block_number",
                   (int(interval_s),)).fetchone()[0]
        rules = one("SELECT rule, COUNT(*) FROM rejected GROUP BY rule ORDER BY rule").fetchall()
        return {
            "readings": int(one("SELECT COUNT(*) FROM readings").fetchone()[0]),
            "late": int(late),
            "rejected": sum(int(r[1]) for r in rules),
            "rejected_by_rule": {str(r[0]): int(r[1]) for r in rules},
        }

    def first_reading_s(self, not_before_s: int = 0) -> int | None:
        """Earliest accepted reading timestamp at or after ``not_before_s``."""
        value = self.db.execute("SELECT MIN(timestamp) FROM readings WHERE timestamp >= ?",
                                (int(not_before_s),)).fetchone()[0]
        return None if value is None else int(value)

    def devices_with_reading_at(self, timestamp: int) -> set[int]:
        rows = self.db.execute("SELECT device_id FROM readings WHERE timestamp=?",
                               (timestamp,)).fetchall()
        return {int(r[0]) for r in rows}

    # ---- intervals
    def interval(self, interval: int) -> IntervalRow | None:
        row = self.db.execute("SELECT * FROM intervals WHERE interval=?", (interval,)).fetchone()
        return None if row is None else IntervalRow(**dict(row))

    def intervals(self, status: str | None = None) -> list[IntervalRow]:
        if status is None:
            rows = self.db.execute("SELECT * FROM intervals ORDER BY interval").fetchall()
        else:
            rows = self.db.execute("SELECT * FROM intervals WHERE status=? ORDER BY interval",
                                   (status,)).fetchall()
        return [IntervalRow(**dict(r)) for r in rows]

    def last_handled_interval(self) -> int | None:
        value = self.db.execute(
            "SELECT MAX(interval) FROM intervals WHERE status IN ('written','skipped')"
        ).fetchone()[0]
        return None if value is None else int(value)

    def save_interval(self, **fields: Any) -> None:
        """Insert or replace one interval row (``fields`` named as the columns)."""
        columns = list(fields)
        with transaction(self.db):
            self.db.execute(
                f"INSERT OR REPLACE INTO intervals ({','.join(columns)}) "
                f"VALUES ({','.join('?' * len(columns))})",
                tuple(fields[c] for c in columns),
            )

    def update_interval(self, interval: int, **fields: Any) -> None:
        sets = ",".join(f"{c}=?" for c in fields)
        with transaction(self.db):
            self.db.execute(f"UPDATE intervals SET {sets} WHERE interval=?",
                            (*fields.values(), interval))

    def forget_intervals_after(self, interval: int | None) -> list[int]:
        """Delete interval rows above ``interval`` (None: all); returns the deleted ids."""
        above = -1 if interval is None else interval
        with transaction(self.db):
            ids = [int(r[0]) for r in self.db.execute(
                "SELECT interval FROM intervals WHERE interval > ?", (above,)).fetchall()]
            self.db.execute("DELETE FROM intervals WHERE interval > ?", (above,))
        return ids

    def mark_stale(self, interval: int, reason: str | None) -> None:
        """Set (or clear, with None) why a written band's inputs are no longer the chain's."""
        self.update_interval(interval, stale_reason=reason)

    def record_failure(self, interval: int, attempt: int, error: str, tx_hash: str | None,
                       action: str) -> None:
        with transaction(self.db):
            self.db.execute(
                "INSERT INTO tx_failures (interval, at, attempt, error, tx_hash, action) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (interval, time.time(), attempt, error, tx_hash, action),
            )

    def failures(self) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM tx_failures ORDER BY id").fetchall()
