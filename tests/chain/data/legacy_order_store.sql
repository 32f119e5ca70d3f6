-- market/gateway/store.py _SCHEMA before schema versions (commit 1efb119)
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
