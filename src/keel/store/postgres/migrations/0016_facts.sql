-- Keel PostgreSQL schema version 16: facts, values stored once by content digest.
-- A step result larger than the workers' fact threshold is stored here once
-- (a journal event keeps only its digest), and Client.save_fact stores values
-- here. A row is never changed; every run shares it.

CREATE TABLE facts (
    digest     text COLLATE "C" PRIMARY KEY,  -- sha256 of data, 64 lowercase hex digits
    data       bytea NOT NULL,
    created_at float8 NOT NULL
);
