-- Keel schema version 15: facts, values stored once by content digest.
-- A step result larger than the workers' fact threshold is stored here once
-- (a journal event keeps only its digest), and Client.save_fact stores values
-- here. A row is never changed; every run shares it. A rowid table, not
-- WITHOUT ROWID: its rows are large by design.

CREATE TABLE facts (
    digest     TEXT PRIMARY KEY,  -- sha256 of data, 64 lowercase hex digits
    data       BLOB NOT NULL,
    created_at REAL NOT NULL
);
