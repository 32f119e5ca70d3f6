-- oracle/store.py _SCHEMA before schema versions (commit 1efb119)
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
    theta_micro_rad INTEGER NOT NULL, late INTEGER NOT NULL DEFAULT 0,
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
    PRIMARY KEY (tx_hash, log_index, position)
);
CREATE INDEX IF NOT EXISTS rejected_block ON rejected (block_number);
CREATE TABLE IF NOT EXISTS intervals (
    interval INTEGER PRIMARY KEY, source_interval INTEGER NOT NULL, status TEXT NOT NULL,
    tx_hash TEXT, block_number INTEGER, inputs_hash TEXT, inputs_json TEXT, bands_json TEXT,
    n_readings INTEGER NOT NULL DEFAULT 0, n_missing INTEGER NOT NULL DEFAULT 0,
    missing_json TEXT, infeasible_steps INTEGER NOT NULL DEFAULT 0,
    n_steps INTEGER NOT NULL DEFAULT 0, reason TEXT, computed_at REAL, written_at REAL,
    latency_s REAL
);
CREATE TABLE IF NOT EXISTS tx_failures (
    id INTEGER PRIMARY KEY AUTOINCREMENT, interval INTEGER NOT NULL, at REAL NOT NULL,
    attempt INTEGER NOT NULL, error TEXT NOT NULL, tx_hash TEXT, action TEXT NOT NULL
);
