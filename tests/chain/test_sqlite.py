"""SQLite plumbing of the stores: schema versions, migrations, refusals, transactions, uint64.

Legacy files are built as the code before schema versions built them: its DDL verbatim
(``tests/chain/data/legacy_*.sql``), ``executescript`` on an autocommit WAL connection and, for
the oracle store, the ``meta`` row ``schema`` = "1".
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from gridshare.chain.sqlite import (
    Migration,
    Schema,
    StoreVersionError,
    connect,
    expect_tables,
    open_store,
    transaction,
    uint64_text,
)
from market.gateway import store as order_store
from market.gateway.store import OrderStore
from market.orders import Order, Side
from oracle import store as oracle_store
from oracle.store import Cursor, Store

DATA = Path(__file__).parent / "data"
U64 = 2**64 - 1
PROSUMER = "0x" + "11" * 20


def _legacy_file(path: Path, ddl: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript((DATA / ddl).read_text())
    return db


def _header(path: Path) -> tuple[int, int]:
    with sqlite3.connect(path) as db:
        return (db.execute("PRAGMA application_id").fetchone()[0],
                db.execute("PRAGMA user_version").fetchone()[0])


def _schema_sql(path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite%' "
                          "ORDER BY name").fetchall()


# ---- a toy store for the generic rules
def _adopt(db: sqlite3.Connection) -> None:
    expect_tables(db, ("t",))


def _add_b(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE t ADD COLUMN b INTEGER")


def _broken(db: sqlite3.Connection) -> None:
    db.execute("INSERT INTO t (a) VALUES (99)")
    raise RuntimeError("step failed")


ADD_B = Migration("add b", _add_b)


def _toy(second: Migration = ADD_B) -> Schema:
    return Schema("toy store", 0x746F7921, "CREATE TABLE t (a INTEGER, b INTEGER);",
                  (Migration("adopt t", _adopt), second))


def _unversioned_toy(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (a INTEGER)")
        db.execute("INSERT INTO t VALUES (7)")
    assert _header(path) == (0, 0)


def test_a_new_file_is_created_at_the_newest_version(tmp_path):
    conn = open_store(tmp_path / "sub" / "toy.sqlite", _toy())
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    assert _header(tmp_path / "sub" / "toy.sqlite") == (0x746F7921, 2)
    memory = open_store(":memory:", _toy())
    assert memory.execute("PRAGMA user_version").fetchone()[0] == 2


def test_version_0_is_migrated_step_by_step_each_step_logged(tmp_path, caplog):
    path = tmp_path / "toy.sqlite"
    _unversioned_toy(path)
    with caplog.at_level(logging.INFO, logger="gridshare.chain.sqlite"):
        conn = open_store(path, _toy())
    assert conn.execute("SELECT a, b FROM t").fetchall() == [(7, None)]
    conn.close()
    assert _header(path) == (0x746F7921, 2)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [f"toy store {path}: migrating schema version 0 -> 1 (adopt t)",
                     f"toy store {path}: migrating schema version 1 -> 2 (add b)"]


def test_each_step_commits_on_its_own(tmp_path):
    path = tmp_path / "toy.sqlite"
    _unversioned_toy(path)
    with pytest.raises(RuntimeError, match="step failed"):
        open_store(path, _toy(Migration("broken", _broken)))
    assert _header(path) == (0x746F7921, 1)  # step 1 kept, step 2 rolled back
    conn = open_store(path, _toy())
    assert conn.execute("SELECT a, b FROM t").fetchall() == [(7, None)]


def test_concurrent_openers_create_the_file_once(tmp_path):
    path = tmp_path / "toy.sqlite"
    errors: list[BaseException] = []

    def opener() -> None:
        try:
            open_store(path, _toy()).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _header(path) == (0x746F7921, 2)


def _refused(path: Path, schema: Schema) -> str:
    with pytest.raises(StoreVersionError) as info:
        open_store(path, schema)
    return str(info.value)


def test_a_newer_version_is_refused_with_the_versions(tmp_path):
    path = tmp_path / "toy.sqlite"
    open_store(path, _toy()).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=3")
    assert _refused(path, _toy()) == (
        f"cannot open {path} as a gridshare toy store: written by a newer gridshare "
        "(file schema version 3, supported up to 2)")


def test_foreign_files_are_refused_and_left_alone(tmp_path):
    other_tables = tmp_path / "other.sqlite"
    with sqlite3.connect(other_tables) as db:
        db.execute("CREATE TABLE users (name TEXT)")
    before = other_tables.read_bytes()
    assert _refused(other_tables, _toy()) == (
        f"cannot open {other_tables} as a gridshare toy store: unknown layout: tables users; "
        "expected t (file schema version 0, supported up to 2)")
    assert other_tables.read_bytes() == before

    other_app = tmp_path / "app.sqlite"
    _unversioned_toy(other_app)
    with sqlite3.connect(other_app) as db:
        db.execute("PRAGMA application_id=1234")
    assert "application_id 0x4d2 is another application's (expected 0x746f7921)" in \
        _refused(other_app, _toy())

    versioned = tmp_path / "versioned.sqlite"
    _unversioned_toy(versioned)
    with sqlite3.connect(versioned) as db:
        db.execute("PRAGMA user_version=1")
    assert "(file schema version 1, supported up to 2)" in _refused(versioned, _toy())
    assert _header(versioned) == (0, 1)

    text = tmp_path / "notes.txt"
    text.write_text("not a database, but long enough to have a header of 100 bytes " * 4)
    assert _refused(text, _toy()) == (
        f"cannot open {text} as a gridshare toy store: not a SQLite database "
        "(file schema version unknown, supported up to 2)")


def test_a_store_refuses_the_other_stores_file(tmp_path):
    OrderStore(tmp_path / "orders.sqlite").close()
    with pytest.raises(StoreVersionError, match="as a gridshare oracle store: application_id"):
        Store(tmp_path / "orders.sqlite")


# ---- transactions
def test_transaction_commits_or_rolls_back(tmp_path):
    conn = connect(tmp_path / "t.sqlite")
    conn.execute("CREATE TABLE t (a INTEGER)")
    with transaction(conn):
        conn.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(ZeroDivisionError), transaction(conn):
        conn.execute("INSERT INTO t VALUES (2)")
        _ = 1 / 0
    assert not conn.in_transaction
    assert conn.execute("SELECT a FROM t").fetchall() == [(1,)]


def test_transaction_waits_for_another_writer(tmp_path):
    conn = connect(tmp_path / "t.sqlite", busy_timeout_s=0.0)
    conn.execute("CREATE TABLE t (a INTEGER)")
    other = connect(tmp_path / "t.sqlite", busy_timeout_s=0.0)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t VALUES (1)")
    threading.Timer(0.2, other.execute, ("COMMIT",)).start()
    start = time.monotonic()
    with transaction(conn):
        conn.execute("INSERT INTO t VALUES (2)")
    assert time.monotonic() - start >= 0.15
    assert conn.execute("SELECT a FROM t ORDER BY a").fetchall() == [(1,), (2,)]


# ---- the oracle store
def test_oracle_store_migrates_a_file_of_the_unversioned_code(tmp_path):
    path = tmp_path / "oracle.sqlite"
    db = _legacy_file(path, "legacy_oracle_store.sql")
    db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', '1')")
    db.execute("INSERT INTO meta VALUES ('chain_id', '1')")
    db.execute("INSERT INTO cursor VALUES (1, 42, '0xabc')")
    db.execute("INSERT INTO intervals (interval, source_interval, status, reason) "
               "VALUES (7, 6, 'skipped', 'test')")
    db.close()
    store = Store(path)
    assert store.meta("chain_id") == "1"
    assert store.meta("schema") is None  # the user_version replaces it
    assert store.cursor() == Cursor(42, "0xabc")
    assert [(r.interval, r.status, r.reason) for r in store.intervals()] == [(7, "skipped",
                                                                                 "test")]
    store.close()
    assert _header(path) == (oracle_store.SCHEMA.application_id, oracle_store.SCHEMA.version)
    Store(tmp_path / "new.sqlite").close()
    assert _schema_sql(path) == _schema_sql(tmp_path / "new.sqlite")


def test_oracle_store_refuses_an_unversioned_file_without_its_schema_row(tmp_path):
    path = tmp_path / "oracle.sqlite"
    _legacy_file(path, "legacy_oracle_store.sql").close()
    with pytest.raises(StoreVersionError, match="unknown layout: meta schema = None"):
        Store(path)


def test_oracle_store_keeps_integers_below_2_63_exactly_and_refuses_larger(tmp_path):
    store = Store(tmp_path / "oracle.sqlite")
    store.save_interval(interval=2**63 - 1, source_interval=2**63 - 2, status="skipped")
    assert store.last_handled_interval() == 2**63 - 1
    with pytest.raises(OverflowError):
        store.save_interval(interval=U64, source_interval=U64 - 1, status="skipped")
    assert [r.interval for r in store.intervals()] == [2**63 - 1]
    assert not store.db.in_transaction


# ---- the order store
def _order(interval: int, nonce: int, deadline: int = 10) -> Order:
    return Order(PROSUMER, interval, Side.BUY, 10, 20, nonce, deadline)


def test_order_store_round_trips_uint64_max(tmp_path):
    store = OrderStore(tmp_path / "orders.sqlite")
    top = Order(PROSUMER, U64, Side.SELL, U64, U64, U64, U64)
    below = Order(PROSUMER, U64 - 1, Side.SELL, U64 - 1, U64 - 1, U64 - 1, U64 - 1)
    store.insert(top, b"\x01" * 32, b"sig", 1.5)
    store.insert_grouped(below, b"\x02" * 32, b"sig", 2.5)
    assert store.by_digest(b"\x01" * 32).order == top
    assert [s.order for s in store.of_interval(U64)] == [top]
    assert [s.order for s in store.of_interval(U64 - 1)] == [below]
    assert store.counts(U64)["pending"] == 1
    assert store.next_nonce(PROSUMER) == U64 + 1
    store.close_interval(U64, 3.0)
    assert store.is_closed(U64) and not store.is_closed(U64 - 1)
    assert store.closed_intervals() == [U64]
    store.close()


def test_order_store_migrates_a_file_of_the_unversioned_code(tmp_path, caplog):
    path = tmp_path / "orders.sqlite"
    db = _legacy_file(path, "legacy_order_store.sql")
    insert = ("INSERT INTO orders (digest, prosumer, interval, side, energy_wh, "
              "price_micro_eur_per_kwh, nonce, deadline_unix_s, signature, received_unix_s) "
              "VALUES (?, ?, ?, 0, 10, 20, ?, ?, x'00', 1.0)")
    # the old code stored uint64 values above 2**63 - 1 as text: INTEGER affinity made a REAL
    db.execute(insert, ("0x" + "01" * 32, PROSUMER, 5, 0, 10))
    db.execute(insert, ("0x" + "02" * 32, PROSUMER, 2**63 - 1, 1, str(2**63 + 5)))
    db.execute(insert, ("0x" + "03" * 32, PROSUMER, 5, 2, 10))
    db.execute("DELETE FROM orders WHERE seq = 3")
    db.execute("INSERT INTO closed_intervals VALUES (5, 1.0)")
    db.close()
    with caplog.at_level(logging.INFO, logger="gridshare.chain.sqlite"):
        store = OrderStore(path)
    assert len(caplog.records) == order_store.SCHEMA.version  # one line per step from 0
    assert [s.order for s in store.of_interval(5)] == [_order(5, 0)]
    assert [s.order for s in store.of_interval(2**63 - 1)] == [
        _order(2**63 - 1, 1, int(float(2**63 + 5)))]  # the value the old code read back
    assert store.closed_intervals() == [5]
    assert store.insert(_order(6, 3), b"\x04" * 32, b"sig", 2.0) == 4  # seq 3 stays used
    assert store.next_nonce(PROSUMER) == 4
    store.close()
    assert _header(path) == (order_store.SCHEMA.application_id, order_store.SCHEMA.version)
    OrderStore(tmp_path / "new.sqlite").close()
    assert _schema_sql(path) == _schema_sql(tmp_path / "new.sqlite")


def test_uint64_text_refuses_what_is_not_a_uint64():
    assert uint64_text(U64) == "18446744073709551615"
    for value in (-1, 2**64, True):
        with pytest.raises(ValueError, match="not a uint64"):
            uint64_text(value)
