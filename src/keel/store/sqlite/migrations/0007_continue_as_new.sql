-- Continue-as-new (version 7): a run may end 'continued', handing over to a
-- successor run of the same chain. chain_id is the chain's first run id (NULL
-- for a first run: coalesce(chain_id, run_id) is the chain), generation counts
-- the switches, continued_to names the successor. SQLite cannot widen the
-- state CHECK in place, so the runs table is rebuilt (the documented
-- procedure; keel opens the file with foreign keys off while it migrates, so
-- dropping the old table cascades nothing). Indexes are made again after it.
CREATE TABLE runs_new (
    run_id           TEXT PRIMARY KEY,
    workflow         TEXT NOT NULL,
    version          TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN
                        ('pending', 'running', 'suspended', 'completed', 'failed', 'cancelled',
                         'continued')),
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL,
    wake_at          REAL,
    lease_owner      TEXT,
    lease_token      INTEGER NOT NULL DEFAULT 0,
    lease_expires_at REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    next_seq         INTEGER NOT NULL DEFAULT 0,
    input            BLOB NOT NULL,
    result           BLOB,
    error            BLOB,
    parent_run_id    TEXT,
    parent_close     TEXT
        CHECK (parent_close IN ('cancel', 'abandon', 'wait')),
    depth            INTEGER NOT NULL DEFAULT 0,
    chain_id         TEXT,
    generation       INTEGER NOT NULL DEFAULT 0,
    continued_to     TEXT);

INSERT INTO runs_new (run_id, workflow, version, state, created_at, updated_at, wake_at,
                      lease_owner, lease_token, lease_expires_at, cancel_requested, next_seq,
                      input, result, error, parent_run_id, parent_close, depth)
SELECT run_id, workflow, version, state, created_at, updated_at, wake_at,
       lease_owner, lease_token, lease_expires_at, cancel_requested, next_seq,
       input, result, error, parent_run_id, parent_close, depth
FROM runs;

DROP TABLE runs;

ALTER TABLE runs_new RENAME TO runs;

CREATE INDEX runs_due ON runs (wake_at) WHERE state IN ('pending', 'suspended');
CREATE INDEX runs_lease ON runs (lease_expires_at) WHERE state = 'running';
CREATE INDEX runs_created ON runs (created_at, run_id);
CREATE INDEX runs_workflow ON runs (workflow, created_at, run_id);
CREATE INDEX runs_parent ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL;
CREATE INDEX runs_chain ON runs (chain_id) WHERE chain_id IS NOT NULL;
