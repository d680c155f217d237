-- Operator actions (version 11): a run may end 'terminated' (an operator's
-- terminate: no cleanup ran), and a retry or fork names the run whose journal
-- it copied (forked_from) and the seq where the copy stops (fork_seq). SQLite
-- cannot widen the state CHECK in place, so the runs table is rebuilt as in
-- migration 7 (foreign keys are off while keel migrates: dropping the old
-- table cascades nothing), and its indexes are made again.
CREATE TABLE runs_new (
    run_id           TEXT PRIMARY KEY,
    workflow         TEXT NOT NULL,
    version          TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN
                        ('pending', 'running', 'suspended', 'completed', 'failed', 'cancelled',
                         'continued', 'terminated')),
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
    continued_to     TEXT,
    forked_from      TEXT,
    fork_seq         INTEGER);

INSERT INTO runs_new (run_id, workflow, version, state, created_at, updated_at, wake_at,
                      lease_owner, lease_token, lease_expires_at, cancel_requested, next_seq,
                      input, result, error, parent_run_id, parent_close, depth, chain_id,
                      generation, continued_to)
SELECT run_id, workflow, version, state, created_at, updated_at, wake_at,
       lease_owner, lease_token, lease_expires_at, cancel_requested, next_seq,
       input, result, error, parent_run_id, parent_close, depth, chain_id,
       generation, continued_to
FROM runs;

DROP TABLE runs;

ALTER TABLE runs_new RENAME TO runs;

CREATE INDEX runs_due ON runs (wake_at, workflow, version) WHERE state IN ('pending', 'suspended');
CREATE INDEX runs_lease ON runs (lease_expires_at) WHERE state = 'running';
CREATE INDEX runs_created ON runs (created_at, run_id);
CREATE INDEX runs_workflow ON runs (workflow, created_at, run_id);
CREATE INDEX runs_parent ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL;
CREATE INDEX runs_chain ON runs (chain_id) WHERE chain_id IS NOT NULL;
-- The forks of a run (its retries), and prune's walk: ended runs by end time
-- (an ended run's updated_at, which nothing changes once it has ended).
CREATE INDEX runs_forked_from ON runs (forked_from) WHERE forked_from IS NOT NULL;
CREATE INDEX runs_ended ON runs (updated_at)
    WHERE state IN ('completed', 'failed', 'cancelled', 'continued', 'terminated');
