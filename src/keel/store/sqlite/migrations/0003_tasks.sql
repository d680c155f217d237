-- Keel schema version 3: dispatched steps.
-- A step routed to a named queue becomes a task row, inserted with the journal
-- write that records the dispatch and claimed by workers serving that queue.
-- The claim walks tasks_due; the sweep of expired task leases walks
-- tasks_leased. Times are seconds since the epoch on the store clock.

CREATE TABLE tasks (
    task_id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id           TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    command          TEXT NOT NULL,  -- the step command's id in the run
    step             TEXT NOT NULL,  -- the step's registered name
    queue            TEXT NOT NULL,
    priority         INTEGER NOT NULL,  -- higher first
    args             BLOB NOT NULL,
    attempt          INTEGER NOT NULL,  -- the attempt allowed to run (1-based)
    max_attempts     INTEGER NOT NULL CHECK (max_attempts >= 1),
    state            TEXT NOT NULL CHECK (state IN ('available', 'leased', 'completed', 'failed')),
    available_at     REAL NOT NULL,
    lease_owner      TEXT,
    lease_expires_at REAL,
    result           BLOB,
    error            BLOB,
    created_at       REAL NOT NULL,
    UNIQUE (run_id, command)
);

CREATE INDEX tasks_due ON tasks (queue, priority DESC, available_at, task_id)
    WHERE state = 'available';
CREATE INDEX tasks_leased ON tasks (lease_expires_at) WHERE state = 'leased';
