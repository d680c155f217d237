-- Keel PostgreSQL schema version 2: cross-run idempotency keys.
-- A step called with a user idempotency key stores its first committed result
-- here; later calls with the same (step, key), in any run, reuse it.

CREATE TABLE idempotency_keys (
    scope      text COLLATE "C" NOT NULL,  -- the step's name
    key        text COLLATE "C" NOT NULL,
    result     bytea NOT NULL,
    created_at float8 NOT NULL,
    PRIMARY KEY (scope, key)
);
