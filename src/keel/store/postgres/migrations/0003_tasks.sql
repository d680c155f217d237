-- Keel PostgreSQL schema version 3: dispatched steps.
-- A step routed to a named queue becomes a task row, inserted in the statement
-- that journals the dispatch and claimed (FOR UPDATE SKIP LOCKED) by workers
-- serving that queue. The claim walks tasks_due; the sweep of expired task
-- leases walks tasks_leased. Times are seconds since the epoch on the database
-- clock.

CREATE TABLE tasks (
    task_id          bigserial PRIMARY KEY,
    run_id           text COLLATE "C" NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    command          text COLLATE "C" NOT NULL,  -- the step command's id in the run
    step             text NOT NULL,  -- the step's registered name
    queue            text COLLATE "C" NOT NULL,
    priority         integer NOT NULL,  -- higher first
    args             bytea NOT NULL,
    attempt          integer NOT NULL,  -- the attempt allowed to run (1-based)
    max_attempts     integer NOT NULL CHECK (max_attempts >= 1),
    state            text NOT NULL CHECK (state IN ('available', 'leased', 'completed', 'failed')),
    available_at     float8 NOT NULL,
    lease_owner      text,
    lease_expires_at float8,
    result           bytea,
    error            bytea,
    created_at       float8 NOT NULL,
    UNIQUE (run_id, command)
);

CREATE INDEX tasks_due ON tasks (queue, priority DESC, available_at, task_id)
    WHERE state = 'available';
CREATE INDEX tasks_leased ON tasks (lease_expires_at) WHERE state = 'leased';
