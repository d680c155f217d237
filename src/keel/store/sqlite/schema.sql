-- The full current Keel schema (version 10), for reading. Databases are built by
-- applying migrations/ in order; a test checks both give the same schema.

CREATE TABLE keel_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
-- rows: ('application', 'keel'), ('schema_version', '10')

-- Rebuilt by version 7 (continue-as-new), so SQLite stores its name quoted.
CREATE TABLE "runs" (
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
    -- child runs (version 6): NULL parent for a run started by a client
    parent_run_id    TEXT,
    parent_close     TEXT
        CHECK (parent_close IN ('cancel', 'abandon', 'wait')),
    depth            INTEGER NOT NULL DEFAULT 0,
    -- continue-as-new (version 7): NULL chain_id for a chain's first run
    chain_id         TEXT,
    generation       INTEGER NOT NULL DEFAULT 0,
    continued_to     TEXT);

-- Claims walk runs_due; it carries workflow and version (version 10) so runs of
-- versions the claimer lacks are skipped without reading their rows.
CREATE INDEX runs_due ON runs (wake_at, workflow, version) WHERE state IN ('pending', 'suspended');
CREATE INDEX runs_lease ON runs (lease_expires_at) WHERE state = 'running';
CREATE INDEX runs_created ON runs (created_at, run_id);
CREATE INDEX runs_workflow ON runs (workflow, created_at, run_id);
CREATE INDEX runs_parent ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL;
CREATE INDEX runs_chain ON runs (chain_id) WHERE chain_id IS NOT NULL;

CREATE TABLE events (
    run_id     TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    type       TEXT NOT NULL,
    command    TEXT,
    data       BLOB NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;

CREATE TABLE signals (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id       TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    payload      BLOB NOT NULL,
    created_at   REAL NOT NULL,
    consumed_seq INTEGER, -- seq of the journal write that consumed it; NULL while buffered
    -- version 9: the sender's delivery id, unique per chain (NULL: none), and the
    -- chain the signal was sent to (set with delivery_id)
    delivery_id  TEXT,
    chain_id     TEXT);

CREATE INDEX signals_pending ON signals (run_id, name, id) WHERE consumed_seq IS NULL;
CREATE UNIQUE INDEX signals_delivery ON signals (chain_id, delivery_id)
    WHERE delivery_id IS NOT NULL;

-- Cross-run idempotency keys (version 2): the first committed result per (step, key).
CREATE TABLE idempotency_keys (
    scope      TEXT NOT NULL,  -- the step's name
    key        TEXT NOT NULL,
    result     BLOB NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (scope, key)
) WITHOUT ROWID;

-- Dispatched steps (version 3): a step routed to a named queue, claimed by the
-- workers serving that queue. The claim walks tasks_due; the sweep of expired
-- task leases walks tasks_leased.
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
CREATE INDEX tasks_leased_queue ON tasks (queue) WHERE state = 'leased';

-- Cluster-wide queue limits (version 4): at most `concurrency` tasks of the
-- queue leased at once over all workers; a queue without a row is uncapped.
CREATE TABLE queues (
    queue       TEXT PRIMARY KEY,
    concurrency INTEGER NOT NULL CHECK (concurrency >= 1)
) WITHOUT ROWID;

-- Schedules (version 5): start runs of a workflow on a cron expression (in a
-- time zone) or once at a given time. Any worker fires a due schedule with a
-- compare-and-set on next_fire_at that creates the tick's run in the same
-- transaction; schedule loops walk schedules_due.
CREATE TABLE schedules (
    schedule_id    TEXT PRIMARY KEY,
    workflow       TEXT NOT NULL,
    input          BLOB NOT NULL,  -- encoded arguments, as runs.input
    cron           TEXT,  -- NULL for a one-shot schedule
    at             REAL,  -- the one-shot's time; NULL for a cron schedule
    timezone       TEXT NOT NULL,
    next_fire_at   REAL,  -- NULL once a one-shot has fired
    paused         INTEGER NOT NULL DEFAULT 0,
    overlap        TEXT NOT NULL CHECK (overlap IN ('allow', 'skip')),
    catchup_window REAL,  -- seconds; a tick found later than this is skipped
    last_fire_at   REAL,  -- tick of the last run started
    last_run_id    TEXT,
    created_at     REAL NOT NULL,
    updated_at     REAL NOT NULL,
    CHECK ((cron IS NULL) <> (at IS NULL))
);

CREATE INDEX schedules_due ON schedules (next_fire_at)
    WHERE paused = 0 AND next_fire_at IS NOT NULL;

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

-- Worker versions (version 10): the (workflow, version) pairs each worker has
-- registered, upserted when it starts and refreshed by its heartbeat loop. A
-- pair is live while some row of it has live_until >= now. A drained worker
-- deletes its rows; rows of dead workers are pruned a day after last seen.
CREATE TABLE worker_versions (
    workflow   TEXT NOT NULL,
    version    TEXT NOT NULL,
    worker     TEXT NOT NULL,  -- the worker's lease owner id
    host       TEXT NOT NULL,
    pid        INTEGER NOT NULL,
    first_seen REAL NOT NULL,
    last_seen  REAL NOT NULL,
    live_until REAL NOT NULL,
    PRIMARY KEY (workflow, version, worker)
) WITHOUT ROWID;
