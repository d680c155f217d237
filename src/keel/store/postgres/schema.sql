-- The full current Keel PostgreSQL schema (version 18), for reading. Databases are
-- built by applying migrations/ in order inside Keel's schema (default "keel");
-- a test checks that both give the same catalog.

CREATE TABLE keel_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);
-- rows: ('application', 'keel'), ('schema_version', '18')

-- Fencing tokens: every claim takes nextval, so a token is larger than every
-- token handed out before it, on any run. CACHE 1 (the default) keeps values
-- in call order across sessions; a larger cache would break that.
CREATE SEQUENCE lease_tokens AS bigint CACHE 1;

-- One narrow row per run: state, times, lease and counters only, so the
-- per-step fenced UPDATE (next_seq, updated_at) stays small. Neither column is
-- indexed (nor is any column computed from them whose value that UPDATE
-- changes) and fillfactor leaves room on the page, so that UPDATE is HOT.
-- Times are seconds since the epoch on the database clock, stored as float8
-- so that values round-trip exactly to Python floats.
CREATE TABLE runs (
    run_id           text COLLATE "C" PRIMARY KEY,
    workflow         text NOT NULL,
    version          text NOT NULL,
    state            text NOT NULL CHECK (state IN
                        ('pending', 'running', 'suspended', 'completed', 'failed', 'cancelled',
                         'continued', 'terminated')),
    created_at       float8 NOT NULL,
    updated_at       float8 NOT NULL,
    wake_at          float8,
    lease_owner      text,
    lease_token      bigint NOT NULL DEFAULT 0,
    lease_expires_at float8,
    cancel_requested boolean NOT NULL DEFAULT false,
    next_seq         bigint NOT NULL DEFAULT 0,
    -- child runs (version 6): NULL parent for a run started by a client
    parent_run_id    text COLLATE "C",
    parent_close     text CHECK (parent_close IN ('cancel', 'abandon', 'wait')),
    depth            smallint NOT NULL DEFAULT 0,
    -- continue-as-new (version 7): NULL chain_id for a chain's first run
    chain_id         text COLLATE "C",
    generation       integer NOT NULL DEFAULT 0,
    continued_to     text COLLATE "C",
    -- a retry or fork (version 12): the run whose journal it copied, up to this seq
    forked_from      text COLLATE "C",
    fork_seq         bigint,
    -- the end time (version 18): updated_at once the run has ended, NULL while
    -- it is live, so the end-time index never changes on a live run's UPDATE
    ended_at         float8 GENERATED ALWAYS AS (
        CASE WHEN state IN ('completed', 'failed', 'cancelled', 'continued', 'terminated')
             THEN updated_at END
    ) STORED
) WITH (fillfactor = 70);

-- Claims walk one of these partial indexes each: due runs by wake_at, and
-- leased runs by lease expiry (to take over from dead workers).
CREATE INDEX runs_due ON runs (wake_at) WHERE state IN ('pending', 'suspended');
CREATE INDEX runs_leased ON runs (lease_expires_at) WHERE state = 'running';
-- list_runs keyset pagination, newest first.
CREATE INDEX runs_created ON runs (created_at, run_id);
CREATE INDEX runs_workflow ON runs (workflow, created_at, run_id);
-- list_runs of one state, and counts per state (version 14).
CREATE INDEX runs_state ON runs (state, created_at, run_id);
-- The children of a run, for the cascade when it ends (version 6).
CREATE INDEX runs_parent ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL;
-- The runs of a continue-as-new chain (version 7).
CREATE INDEX runs_chain ON runs (chain_id) WHERE chain_id IS NOT NULL;
-- The forks of a run (version 12), and prune's walk of ended runs by end time,
-- which also pages the runs list sorted by end time (version 17), on the
-- generated ended_at so that a step's UPDATE changes no indexed value (18).
CREATE INDEX runs_forked_from ON runs (forked_from) WHERE forked_from IS NOT NULL;
CREATE INDEX runs_ended ON runs (ended_at, run_id) WHERE ended_at IS NOT NULL;

-- Inputs and outcomes, written at creation and at the end, read on claim.
CREATE TABLE run_payloads (
    run_id text COLLATE "C" PRIMARY KEY REFERENCES runs (run_id) ON DELETE CASCADE,
    input  bytea NOT NULL,
    result bytea,
    error  bytea
);

-- The journal: contiguous seq per run, starting at 0 (the started event).
CREATE TABLE events (
    run_id     text COLLATE "C" NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    seq        bigint NOT NULL,
    type       text NOT NULL,
    command    text,
    data       bytea NOT NULL,
    created_at float8 NOT NULL,
    PRIMARY KEY (run_id, seq)
);

-- Mailbox. Senders lock the run row before inserting, so id order is commit
-- order per run: delivery order.
CREATE TABLE signals (
    id           bigserial PRIMARY KEY,
    run_id       text COLLATE "C" NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    name         text NOT NULL,
    payload      bytea NOT NULL,
    created_at   float8 NOT NULL,
    consumed_seq bigint, -- seq of the journal write that consumed it; NULL while buffered
    delivery_id  text COLLATE "C", -- version 9: the sender's id, unique per chain (NULL: none)
    chain_id     text COLLATE "C"  -- version 9: the chain it was sent to (set with delivery_id)
);

CREATE INDEX signals_pending ON signals (run_id, name, id) WHERE consumed_seq IS NULL;
CREATE UNIQUE INDEX signals_delivery ON signals (chain_id, delivery_id)
    WHERE delivery_id IS NOT NULL;
-- Deleting a run (retention) cascades here.
CREATE INDEX signals_run ON signals (run_id);

-- Cross-run idempotency keys (version 2): the first committed result per (step, key).
CREATE TABLE idempotency_keys (
    scope      text COLLATE "C" NOT NULL,  -- the step's name
    key        text COLLATE "C" NOT NULL,
    result     bytea NOT NULL,
    created_at float8 NOT NULL,
    PRIMARY KEY (scope, key)
);

-- Dispatched steps (version 3): a step routed to a named queue, inserted in the
-- statement that journals the dispatch and claimed (FOR UPDATE SKIP LOCKED) by
-- the workers serving that queue. The claim walks tasks_due; the sweep of
-- expired task leases walks tasks_leased. The (run_id, command) constraint's
-- index also serves get_task and the cascade from runs.
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
CREATE INDEX tasks_leased_queue ON tasks (queue) WHERE state = 'leased';

-- Cluster-wide queue limits (version 4): at most `concurrency` tasks of the
-- queue leased at once over all workers; a queue without a row is uncapped;
-- 0 pauses the queue (version 13).
CREATE TABLE queues (
    queue       text COLLATE "C" PRIMARY KEY,
    concurrency integer NOT NULL CONSTRAINT queues_concurrency_check CHECK (concurrency >= 0)
);

-- Schedules (version 5): start runs of a workflow on a cron expression (in a
-- time zone) or once at a given time. Any worker fires a due schedule with one
-- statement: a compare-and-set on next_fire_at that creates the tick's run
-- (concurrent firers of one tick queue on the row and all but the first match
-- nothing). Schedule loops walk schedules_due.
CREATE TABLE schedules (
    schedule_id    text COLLATE "C" PRIMARY KEY,
    workflow       text NOT NULL,
    input          bytea NOT NULL,  -- encoded arguments, as run_payloads.input
    cron           text,  -- NULL for a one-shot schedule
    at             float8,  -- the one-shot's time; NULL for a cron schedule
    timezone       text NOT NULL,
    next_fire_at   float8,  -- NULL once a one-shot has fired
    paused         boolean NOT NULL DEFAULT false,
    overlap        text NOT NULL CHECK (overlap IN ('allow', 'skip')),
    catchup_window float8,  -- seconds; a tick found later than this is skipped
    last_fire_at   float8,  -- tick of the last run started
    last_run_id    text,
    created_at     float8 NOT NULL,
    updated_at     float8 NOT NULL,
    CHECK ((cron IS NULL) <> (at IS NULL))
);

CREATE INDEX schedules_due ON schedules (next_fire_at)
    WHERE NOT paused AND next_fire_at IS NOT NULL;

-- Journal snapshots (version 8).
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

-- Worker versions (version 10).
-- The (workflow, version) pairs each worker has registered, upserted when it
-- starts and refreshed by its heartbeat loop. A pair is live while some row of
-- it has live_until >= now. A drained worker deletes its rows; rows of dead
-- workers are pruned a day after they were last seen.

CREATE TABLE worker_versions (
    workflow   text COLLATE "C" NOT NULL,
    version    text COLLATE "C" NOT NULL,
    worker     text COLLATE "C" NOT NULL,  -- the worker's lease owner id
    host       text NOT NULL,
    pid        integer NOT NULL,
    first_seen float8 NOT NULL,
    last_seen  float8 NOT NULL,
    live_until float8 NOT NULL,
    PRIMARY KEY (workflow, version, worker)
);

-- Worker liveness locks (version 11).
-- A worker holds a session-level advisory lock (pg_advisory_lock(classid,
-- lock_key), on a connection of its own) for its whole life and registers it
-- here. A registered worker whose lock is gone has lost its session (its
-- process died), so other workers expire its leases at once instead of after
-- the lease TTL; owners not registered here (older workers) are left to the TTL.

CREATE TABLE worker_locks (
    owner      text COLLATE "C" PRIMARY KEY,
    lock_key   bigint NOT NULL,  -- second key of the advisory lock (0 .. 2^31-1)
    started_at float8 NOT NULL
);

-- Graph specs by digest (version 15): a graph's canonical spec under its
-- (name, version), so any graph run can be drawn, approved and replay-checked
-- without importing its code.

CREATE TABLE graph_specs (
    workflow   text COLLATE "C" NOT NULL,  -- the graph's name
    version    text COLLATE "C" NOT NULL,  -- the digest of spec
    spec       bytea NOT NULL,             -- canonical JSON
    created_at float8 NOT NULL,
    PRIMARY KEY (workflow, version)
);

-- Facts (version 16): values stored once by content digest (large step
-- results, Client.save_fact). A row is never changed; every run shares it.
-- (Version 15 is the graph specs' migration.)
CREATE TABLE facts (
    digest     text COLLATE "C" PRIMARY KEY,  -- sha256 of data, 64 lowercase hex digits
    data       bytea NOT NULL,
    created_at float8 NOT NULL
);
