"""SQLite plumbing shared by every gridshare store: connections, transactions, schema versions.

Connections (:func:`connect`) are in autocommit mode (``isolation_level=None``), usable from
several threads (the store serialises access), with the WAL journal for files, the
``synchronous`` level the store chooses and a busy timeout (seconds). Foreign keys are not used.
Writes go through :func:`transaction`: ``BEGIN IMMEDIATE`` .. ``COMMIT``, ``ROLLBACK`` on any
exception, so a crash leaves all or nothing of one step. ``BEGIN IMMEDIATE`` is retried every
``LOCK_RETRY_S`` while another process holds the write lock, for at most ``LOCK_WAIT_S``
(SQLite's own busy handler backs off in steps up to 100 ms, which shows as latency spikes).

Schema versions. A store describes its file by a :class:`Schema`: a name, a
``PRAGMA application_id`` that marks the file as this store's, the DDL of the newest version and
``migrations``, where step i takes ``PRAGMA user_version`` i to i + 1. :func:`open_store`:

* a new file (application_id 0, user_version 0, no tables) is created at the newest version;
* an older version is migrated step by step, each step in its own transaction and logged;
  application_id 0 with user_version 0 and tables is a file of the code before schema
  versions: the first step recognises that layout (:func:`expect_tables`);
* a newer version, another application's file (another application_id, a user_version without
  our application_id, tables the first step does not recognise) or a file that is not SQLite
  is refused with :class:`StoreVersionError` naming the file, its version and the supported one.

Integers. SQLite INTEGER is signed 64-bit: Python's sqlite3 refuses a larger int with
``OverflowError`` (nothing is stored), and the text of a larger integer put in an INTEGER column
becomes a rounded REAL. A store either keeps its integers below 2**63 by construction and lets
the driver's check refuse anything larger, or stores ``uint64`` fields as the TEXT of the
decimal (:func:`uint64_text`, columns declared TEXT): exact, equal values compare equal, but
TEXT sorts as strings, so such columns are never ordered or compared by size in SQL.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_WAIT_S = 30.0
LOCK_RETRY_S = 0.0005
UINT64_MAX = 2**64 - 1


class StoreVersionError(ValueError):
    """A database file this code cannot open: a newer schema, or not this store's file."""


class UnknownLayoutError(Exception):
    """Raised by a migration step that does not recognise the tables it finds."""


@dataclass(frozen=True)
class Migration:
    """One step of a store's schema: ``apply(conn)`` takes version i to i + 1 (in a
    transaction that :func:`open_store` opens and that also sets the new version)."""

    description: str
    apply: Callable[[sqlite3.Connection], None]


@dataclass(frozen=True)
class Schema:
    """A store's file format: ``create`` builds the newest version (``len(migrations)``)."""

    name: str
    application_id: int
    create: str
    migrations: tuple[Migration, ...]

    @property
    def version(self) -> int:
        return len(self.migrations)


def connect(path: str | Path, *, synchronous: str = "NORMAL",
            busy_timeout_s: float = 5.0) -> sqlite3.Connection:
    """An autocommit connection to ``path`` (``":memory:"``: a private in-memory database),
    configured as the module docstring says; creates the parent directory of a file. No
    schema check: a store opens its file with :func:`open_store`."""
    conn = _open(path)
    try:
        _configure(conn, synchronous, busy_timeout_s)
    except BaseException:
        conn.close()
        raise
    return conn


def _open(path: str | Path) -> sqlite3.Connection:
    """An unconfigured autocommit connection (nothing is read or written yet)."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    return sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                           timeout=LOCK_WAIT_S)


def _configure(conn: sqlite3.Connection, synchronous: str, busy_timeout_s: float) -> None:
    """WAL for a file (a persistent setting: :func:`open_store` sets it only on its own
    files), the ``synchronous`` level and the busy timeout."""
    conn.execute("PRAGMA journal_mode=WAL")  # an in-memory database answers "memory"
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute(f"PRAGMA busy_timeout={round(busy_timeout_s * 1000)}")


def _begin_immediate(conn: sqlite3.Connection) -> None:
    """``BEGIN IMMEDIATE``, retried every ``LOCK_RETRY_S`` for at most ``LOCK_WAIT_S`` while
    another connection holds the write lock."""
    end = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() > end:
                raise
            time.sleep(LOCK_RETRY_S)


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` .. ``COMMIT``; ``ROLLBACK`` on any exception, including a failed
    commit. The caller serialises threads sharing ``conn``."""
    _begin_immediate(conn)
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def uint64_text(value: int) -> str:
    """A ``uint64`` as the TEXT stored for it (the decimal; exact where INTEGER is not)."""
    if isinstance(value, bool) or not 0 <= value <= UINT64_MAX:
        raise ValueError(f"{value!r} is not a uint64")
    return str(int(value))


def expect_tables(conn: sqlite3.Connection, expected: Collection[str]) -> None:
    """Raise :class:`UnknownLayoutError` unless the file's tables are exactly ``expected``
    (SQLite's own ``sqlite_*`` tables aside)."""
    found = _tables(conn)
    if found != set(expected):
        raise UnknownLayoutError(f"tables {', '.join(sorted(found))}; expected "
                                 f"{', '.join(sorted(expected))}")


def _tables(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type='table' "
                        "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'").fetchall()
    return {str(r[0]) for r in rows}


def _header(conn: sqlite3.Connection) -> tuple[int, int]:
    """``(application_id, user_version)`` of the file."""
    app = int(conn.execute("PRAGMA application_id").fetchone()[0])
    return app, int(conn.execute("PRAGMA user_version").fetchone()[0])


def open_store(path: str | Path, schema: Schema, *, synchronous: str = "NORMAL",
               busy_timeout_s: float = 5.0) -> sqlite3.Connection:
    """A connection (as :func:`connect`) to the store file ``path`` at ``schema``'s newest
    version: created, migrated, or refused with :class:`StoreVersionError` (see the module
    docstring) before anything in a refused file is changed."""
    conn = _open(path)
    try:
        if _header(conn) != (schema.application_id, schema.version):
            _upgrade(conn, schema, str(path))
        _configure(conn, synchronous, busy_timeout_s)
    except BaseException as exc:
        conn.close()
        if isinstance(exc, sqlite3.DatabaseError) and exc.sqlite_errorname == "SQLITE_NOTADB":
            raise _refusal(schema, str(path), "unknown", "not a SQLite database") from None
        raise
    return conn


def _upgrade(conn: sqlite3.Connection, schema: Schema, path: str) -> None:
    """Create or migrate, one step per transaction; every step re-reads the version under
    the write lock, so two processes opening the same file do not both migrate it."""
    while True:
        with transaction(conn):
            app, version = _header(conn)
            _check_owner(schema, path, app, version)
            if version == schema.version:
                return
            if version == 0 and not _tables(conn):
                run_script(conn, schema.create)
                _set_header(conn, schema, schema.version)
                return
            step = schema.migrations[version]
            log.info("%s %s: migrating schema version %d -> %d (%s)", schema.name, path,
                     version, version + 1, step.description)
            try:
                step.apply(conn)
            except UnknownLayoutError as exc:
                raise _refusal(schema, path, version, f"unknown layout: {exc}") from None
            _set_header(conn, schema, version + 1)


def _check_owner(schema: Schema, path: str, app: int, version: int) -> None:
    """Refuse another application's file, or a newer version (inside the open transaction)."""
    if app not in (0, schema.application_id):
        raise _refusal(schema, path, version, f"application_id {app:#x} is another "
                       f"application's (expected {schema.application_id:#x})")
    if app == 0 and version != 0:
        raise _refusal(schema, path, version, "a schema version without gridshare's "
                       "application_id: another application's file")
    if version > schema.version:
        raise _refusal(schema, path, version, "written by a newer gridshare")


def _refusal(schema: Schema, path: str, version: int | str, why: str) -> StoreVersionError:
    return StoreVersionError(f"cannot open {path} as a gridshare {schema.name}: {why} (file "
                             f"schema version {version}, supported up to {schema.version})")


def run_script(conn: sqlite3.Connection, script: str) -> None:
    """The ``;``-separated statements of ``script`` (none may contain a ``;``) inside the open
    transaction; ``executescript`` would commit it first."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _set_header(conn: sqlite3.Connection, schema: Schema, version: int) -> None:
    conn.execute(f"PRAGMA application_id={int(schema.application_id)}")
    conn.execute(f"PRAGMA user_version={int(version)}")
