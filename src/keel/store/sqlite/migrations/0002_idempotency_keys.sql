-- Keel schema version 2: cross-run idempotency keys.
-- A step called with a user idempotency key stores its first committed result
-- here; later calls with the same (step, key), in any run, reuse it.

CREATE TABLE idempotency_keys (
    scope      TEXT NOT NULL,  -- the step's name
    key        TEXT NOT NULL,
    result     BLOB NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (scope, key)
) WITHOUT ROWID;
