-- Journal snapshots (version 8): the latest compacted replay state of a run,
-- replaced in place, so recovery loads it plus the journal after upto_seq.
-- Kept out of the hot runs row; the journal (events) is never trimmed by it.
CREATE TABLE snapshots (
    run_id     TEXT PRIMARY KEY REFERENCES runs (run_id) ON DELETE CASCADE,
    upto_seq   INTEGER NOT NULL,  -- last journal seq it covers
    version    TEXT NOT NULL,     -- workflow version (code hash) that made it
    format     INTEGER NOT NULL,  -- encoding format number
    data       BLOB NOT NULL,     -- checksummed encoded snapshot
    created_at REAL NOT NULL
);  -- a rowid table: its rows are large blobs
