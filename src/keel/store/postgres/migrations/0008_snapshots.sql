-- Keel PostgreSQL schema version 8: journal snapshots.
-- The latest compacted replay state of a run, replaced in place, so recovery
-- loads it plus the journal after upto_seq. Kept out of the hot runs row (a
-- snapshot write does not touch it, so the per-step UPDATE stays HOT); the
-- journal (events) is never trimmed by it.

CREATE TABLE snapshots (
    run_id     text COLLATE "C" PRIMARY KEY REFERENCES runs (run_id) ON DELETE CASCADE,
    upto_seq   bigint NOT NULL,  -- last journal seq it covers
    version    text NOT NULL,    -- workflow version (code hash) that made it
    format     integer NOT NULL, -- encoding format number
    data       bytea NOT NULL,   -- checksummed encoded snapshot
    created_at float8 NOT NULL
);
