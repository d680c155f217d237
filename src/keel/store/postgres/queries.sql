-- The SQL of the PostgreSQL store, in named pieces, loaded by keel.store.postgres._sql.
-- Each piece starts at a "-- name: <name>" line. Most are statements; a few are
-- fragments that others include as {name} (their text without comment lines),
-- so that a column list or a condition is written once. A piece may also hold
-- sections, from a line "--[tag ..." to a line "--]", kept only in the variants
-- asked for with one of those tags: the fenced commit of a turn is one
-- statement, and a turn sends only the parts it has.
--
-- Tables are unqualified: every connection's search_path is Keel's schema.
-- Columns come back named as the fields of the records they make.
--
-- Every write is ONE statement run in autocommit mode (one round trip, one
-- transaction): data-modifying CTEs hang the dependent writes off the fenced
-- UPDATE, so when the fence matches nothing, nothing at all is written.
-- "clock" reads the database clock once per statement (a CTE calling a
-- volatile function is evaluated exactly once); all time comparisons use it.
-- Writes that can make a run claimable or finished call pg_notify, which
-- PostgreSQL delivers on commit (commit before wake).

-- name: now
SELECT extract(epoch FROM clock_timestamp())::float8 AS now;

-- name: clock
clock AS MATERIALIZED (SELECT extract(epoch FROM clock_timestamp())::float8 AS now)

-- name: wake
-- SET list making a run due now (unless it is due already): commit before wake.
wake_at = least(coalesce(runs.wake_at, clock.now), clock.now), updated_at = clock.now

-- name: live
runs.state IN ('pending', 'running', 'suspended')

-- Runs ---------------------------------------------------------------------------------

-- name: run_row
-- A run, from runs r and run_payloads p.
r.run_id, r.workflow, r.version, r.state, p.input, p.result, p.error,
       r.created_at, r.updated_at, r.wake_at, r.lease_owner, r.lease_token,
       r.lease_expires_at, r.cancel_requested, r.next_seq, r.parent_run_id,
       r.parent_close, r.depth, r.chain_id, r.generation, r.continued_to, r.forked_from,
       r.fork_seq

-- name: get_runs
-- One run (one: a scalar parameter, cheaper to send than an array), or several.
SELECT {run_row}
FROM runs r JOIN run_payloads p ON p.run_id = r.run_id
--[one
WHERE r.run_id = %(run_id)s::text
--]
--[many
WHERE r.run_id = ANY (%(run_ids)s::text[])
--]

-- name: run_filter
-- The filters of list_runs and count_runs: %(workflows)s and %(states)s are
-- arrays (runs of any of them) or NULL (no filter), as are the other bounds.
(%(workflows)s::text[] IS NULL OR r.workflow = ANY (%(workflows)s::text[]))
  AND (%(states)s::text[] IS NULL OR r.state = ANY (%(states)s::text[]))
  AND (%(since)s::float8 IS NULL OR r.created_at >= %(since)s::float8)
  AND (%(until)s::float8 IS NULL OR r.created_at < %(until)s::float8)
  AND (%(parent_run_id)s::text IS NULL OR r.parent_run_id = %(parent_run_id)s::text)

-- name: list_runs
-- Newest first (newest) or oldest first (oldest), from a keyset cursor. One
-- workflow (one_workflow) can walk the runs_workflow index, one state
-- (one_state) the runs_state index.
SELECT {run_row}
FROM runs r JOIN run_payloads p ON p.run_id = r.run_id
WHERE {run_filter}
--[one_workflow
  AND r.workflow = %(workflow)s::text
--]
--[one_state
  AND r.state = %(state)s::text
--]
  AND r.created_at BETWEEN %(low)s::float8 AND %(high)s::float8
--[newest
  AND (r.created_at, r.run_id) < (%(before_created)s::float8, %(before_run_id)s::text)
ORDER BY r.created_at DESC, r.run_id DESC
--]
--[oldest
  AND (r.created_at, r.run_id) > (%(before_created)s::float8, %(before_run_id)s::text)
ORDER BY r.created_at, r.run_id
--]
LIMIT %(limit)s::bigint;

-- name: list_runs_sorted
-- By end time (ended: ended runs only; walks runs_ended), workflow name or
-- state name (then creation time; walks runs_workflow or runs_state), from a
-- keyset cursor, descending (desc) or ascending (asc). The plain bound on the
-- first key is the index range.
SELECT {run_row}
FROM runs r JOIN run_payloads p ON p.run_id = r.run_id
WHERE {run_filter}
--[one_workflow
  AND r.workflow = %(workflow)s::text
--]
--[one_state
  AND r.state = %(state)s::text
--]
--[ended_desc ended_asc
  AND r.state IN ('completed', 'failed', 'cancelled', 'continued', 'terminated')
--]
--[ended_desc
  AND r.ended_at <= %(key_at)s::float8
  AND (r.ended_at, r.run_id) < (%(key_at)s::float8, %(key_id)s::text)
ORDER BY r.ended_at DESC, r.run_id DESC
--]
--[ended_asc
  AND r.ended_at >= %(key_at)s::float8
  AND (r.ended_at, r.run_id) > (%(key_at)s::float8, %(key_id)s::text)
ORDER BY r.ended_at, r.run_id
--]
--[workflow_desc
  AND r.workflow <= %(key_text)s::text
  AND (r.workflow, r.created_at, r.run_id)
      < (%(key_text)s::text, %(key_at)s::float8, %(key_id)s::text)
ORDER BY r.workflow DESC, r.created_at DESC, r.run_id DESC
--]
--[workflow_asc
  AND r.workflow >= %(key_text)s::text
  AND (r.workflow, r.created_at, r.run_id)
      > (%(key_text)s::text, %(key_at)s::float8, %(key_id)s::text)
ORDER BY r.workflow, r.created_at, r.run_id
--]
--[state_desc
  AND r.state <= %(key_text)s::text
  AND (r.state, r.created_at, r.run_id)
      < (%(key_text)s::text, %(key_at)s::float8, %(key_id)s::text)
ORDER BY r.state DESC, r.created_at DESC, r.run_id DESC
--]
--[state_asc
  AND r.state >= %(key_text)s::text
  AND (r.state, r.created_at, r.run_id)
      > (%(key_text)s::text, %(key_at)s::float8, %(key_id)s::text)
ORDER BY r.state, r.created_at, r.run_id
--]
LIMIT %(limit)s::bigint;

-- name: count_runs
SELECT count(*) AS n FROM runs r WHERE {run_filter};

-- name: count_runs_by_state
SELECT r.state, count(*) AS n FROM runs r WHERE {run_filter} GROUP BY r.state;

-- name: load_events
SELECT run_id, seq, type, command, data, created_at
FROM events WHERE run_id = %(run_id)s::text AND seq > %(after_seq)s::bigint
ORDER BY seq;

-- name: first_event
SELECT run_id, seq, type, command, data, created_at
FROM events WHERE run_id = %(run_id)s::text AND seq = 0;

-- name: run_stats
-- Runs per state, and the earliest moment a run that can be claimed now
-- became due (each branch walks its partial index, as claim_candidates does),
-- read in one statement with the clock they were compared with.
WITH clock AS MATERIALIZED (SELECT extract(epoch FROM clock_timestamp())::float8 AS now),
due AS (
    SELECT min(wake_at) AS due FROM runs, clock
    WHERE state IN ('pending', 'suspended') AND wake_at <= clock.now
    UNION ALL
    SELECT min(lease_expires_at) FROM runs, clock
    WHERE state = 'running' AND lease_expires_at < clock.now
)
SELECT clock.now, (SELECT min(due) FROM due) AS oldest_due,
       counts.state, counts.n
FROM clock
LEFT JOIN (SELECT state, count(*) AS n FROM runs GROUP BY state) AS counts ON true;

-- name: new_runs
-- INSERT INTO runs {new_runs}: the runs of the CTE "born" (NewRun's columns, and
-- lease_owner, lease_ttl, cancel_requested), pending and due at once, or (with
-- a lease_owner) running under a new lease. Goes with {new_run_rows}.
(run_id, workflow, version, state, created_at, updated_at, wake_at, lease_owner,
     lease_token, lease_expires_at, cancel_requested, next_seq, parent_run_id,
     parent_close, depth, chain_id, generation)
    SELECT born.run_id, born.workflow, born.version,
           CASE WHEN born.lease_owner IS NULL THEN 'pending' ELSE 'running' END,
           clock.now, clock.now, CASE WHEN born.lease_owner IS NULL THEN clock.now END,
           born.lease_owner,
           CASE WHEN born.lease_owner IS NULL THEN 0 ELSE nextval('lease_tokens') END,
           clock.now + born.lease_ttl, born.cancel_requested, 1, born.parent_run_id,
           born.parent_close, born.depth, born.chain_id, born.generation
    FROM born, clock

-- name: new_run_rows
-- The payload rows and the started events (seq 0) of the runs "created" from "born".
payload AS (
    INSERT INTO run_payloads (run_id, input)
    SELECT born.run_id, born.input FROM born JOIN created ON created.run_id = born.run_id
), started AS (
    INSERT INTO events (run_id, seq, type, command, data, created_at)
    SELECT born.run_id, 0, born.started_type, born.started_command, born.started_data,
           clock.now
    FROM born JOIN created ON created.run_id = born.run_id, clock
)

-- name: one_run
-- The "born" row of create_run and fire_schedule, from scalar parameters.
SELECT %(run_id)s::text AS run_id, %(workflow)s::text AS workflow,
           %(version)s::text AS version, %(input)s::bytea AS input,
           %(parent_run_id)s::text AS parent_run_id, %(parent_close)s::text AS parent_close,
           %(depth)s::smallint AS depth, %(chain_id)s::text AS chain_id,
           %(generation)s::integer AS generation, false AS cancel_requested,
           %(owner)s::text AS lease_owner, %(ttl)s::float8 AS lease_ttl,
           %(type)s::text AS started_type, %(command)s::text AS started_command,
           %(data)s::bytea AS started_data

-- name: create_run
-- Idempotent on run_id: a row comes back only when this call inserted the run.
-- Without an owner it is claimable at once, so listeners are woken; with one it
-- runs under the caller's new lease, so no other worker can claim it first.
WITH {clock}, born AS (
    {one_run}
), created AS (
    INSERT INTO runs {new_runs}
    ON CONFLICT (run_id) DO NOTHING
    RETURNING run_id, created_at, lease_owner, lease_token, lease_expires_at
), {new_run_rows}, notified AS (
    SELECT count(pg_notify(%(channel)s::text, 'created')) FROM created
    WHERE created.lease_owner IS NULL
)
SELECT created_at, lease_token, lease_expires_at FROM created, notified;

-- name: versions
-- A claimer's (workflow, version) pairs: a JSON array of pairs (one text
-- parameter: cheaper to send than two arrays, never parsed by a claim that
-- meets no due run), or NULL for every run. Checked as a hashed filter.
(%(versions)s::json IS NULL OR (runs.workflow, runs.version) IN (
          SELECT p ->> 0, p ->> 1 FROM json_array_elements(%(versions)s::json) AS p))

-- name: claim_runs
-- Due runs and runs whose lease expired, each walking its partial index in due
-- order and skipping rows another claimer holds locked (rows locked but not
-- chosen are released at commit); the earliest `limit` of both are taken,
-- each under a new token from the sequence. Exactly one row comes back when
-- nothing was claimed (run_id NULL): the database clock, which the store uses
-- to track its offset from ours.
WITH {clock}, due_runs AS (
    SELECT runs.run_id, runs.wake_at AS due
    FROM runs, clock
    WHERE runs.state IN ('pending', 'suspended') AND runs.wake_at <= clock.now
      AND {versions}
    ORDER BY runs.wake_at
    LIMIT %(limit)s::bigint
    FOR UPDATE OF runs SKIP LOCKED
), expired_leases AS (
    SELECT runs.run_id, runs.lease_expires_at AS due
    FROM runs, clock
    WHERE runs.state = 'running' AND runs.lease_expires_at < clock.now AND {versions}
    ORDER BY runs.lease_expires_at
    LIMIT %(limit)s::bigint
    FOR UPDATE OF runs SKIP LOCKED
), chosen AS (
    SELECT run_id, due FROM due_runs
    UNION ALL
    SELECT run_id, due FROM expired_leases
    ORDER BY due, run_id
    LIMIT %(limit)s::bigint
), claimed AS (
    UPDATE runs
    SET state = 'running', lease_owner = %(owner)s::text,
        lease_token = nextval('lease_tokens'), lease_expires_at = clock.now + %(ttl)s::float8,
        wake_at = NULL, updated_at = clock.now
    FROM chosen, clock
    WHERE runs.run_id = chosen.run_id
    RETURNING runs.*, chosen.due
)
SELECT clock.now, {run_row}
FROM clock LEFT JOIN (claimed r JOIN run_payloads p ON p.run_id = r.run_id) ON true
ORDER BY r.due, r.run_id;

-- name: held
-- A lease (of the row updated) still held by %(owner)s: an expired one cannot be
-- renewed or used, since another worker may have claimed the run (or the task's
-- attempt may be consumed).
lease_owner = %(owner)s::text AND lease_expires_at >= clock.now

-- name: renew_leases
-- Returns the clock, the new expiry, and which runs were renewed and which of
-- those have a cancel request.
WITH {clock}, renewed AS (
    UPDATE runs SET lease_expires_at = clock.now + %(ttl)s::float8
    FROM clock, unnest(%(run_ids)s::text[], %(tokens)s::bigint[]) AS held (run_id, token)
    WHERE runs.run_id = held.run_id AND runs.lease_token = held.token
      AND runs.state = 'running' AND {held}
    RETURNING runs.run_id, runs.cancel_requested
)
SELECT clock.now, clock.now + %(ttl)s::float8 AS expires_at,
       array(SELECT run_id FROM renewed) AS renewed,
       array(SELECT run_id FROM renewed WHERE cancel_requested) AS cancel_requested
FROM clock;

-- name: fence
-- The fence of every write made for a worker: the lease's token, the run
-- running, the lease held.
runs.run_id = %(run_id)s::text AND runs.lease_token = %(token)s::bigint
      AND runs.state = 'running' AND {held}

-- name: family
-- The CTE "ended" (run_id, parent_run_id, state) holds runs that just ended.
-- Commit before wake: the parent of each (not after continue-as-new: the chain
-- goes on; even a running parent, whose suspend then sees its row changed) is
-- made due, and the children it closes are asked to cancel ("wait" ones only
-- when it was cancelled or terminated): their holders or next claimers cancel them the
-- normal way, and their own end cascades further. Its queued and leased tasks
-- are discarded: a task worker's next heartbeat finds its lease gone and stops.
parent_woken AS (
    UPDATE runs SET {wake}
    FROM ended, clock
    WHERE runs.run_id = ended.parent_run_id AND ended.state <> 'continued' AND {live}
    RETURNING 1
), children_closed AS (
    UPDATE runs SET cancel_requested = true, {wake}
    FROM ended, clock
    WHERE runs.parent_run_id = ended.run_id AND {live}
      AND (runs.parent_close = 'cancel'
           OR (runs.parent_close = 'wait' AND ended.state IN ('cancelled', 'terminated')))
    RETURNING 1
), tasks_dropped AS (
    DELETE FROM tasks USING ended
    WHERE tasks.run_id = ended.run_id AND tasks.state IN ('available', 'leased')
), family_notified AS (
    SELECT count(pg_notify(%(channel)s::text, 'family'))
    FROM (SELECT 1 FROM parent_woken UNION ALL SELECT 1 FROM children_closed) AS woken
)

-- name: commit
-- The fenced commit of a turn, the hot path (one round trip per step), in the
-- order: fence, events, the signal consumed, child runs (and a continue-as-new
-- successor), tasks, end. The fence also needs the journal to continue at
-- first_seq, (signal) the signal to be the run's and unconsumed and (tasks)
-- no task of the run to have one of the commands; only a row it returns gets
-- the rest, and no row back means nothing was written (the caller asks
-- fence_row why). A taken run id fails the whole statement.
--
-- suspend: the run drops its lease and sleeps until wake_at. A cancel request
-- not yet delivered to the workflow, or a signal, task or child it waits for
-- that is already there or ended, makes it due at once (no lost wake-up). A
-- sender or a finishing task or child locks this row before it commits; if it
-- committed after this statement's snapshot was taken (we waited for the row
-- lock), the EXISTS cannot see it, but the row version we update is then newer
-- than the snapshot's: that also wakes the run (at worst one spurious wake-up).
--
-- finish / continue: the run ends (see {family}); finish stores its outcome;
-- continue names its successor, which inherits the run's cancel request and
-- its unconsumed signals (same ids: delivery order holds). A continue runs
-- after lock_run in the same transaction, so its snapshot sees every signal
-- committed before it.
WITH {clock}, fenced AS (
    UPDATE runs
    SET next_seq = next_seq + %(n)s::bigint, updated_at = clock.now
--[suspend finish continue
      , state = %(state)s::text, lease_owner = NULL, lease_expires_at = NULL
--]
--[finish continue
      , wake_at = NULL
--]
--[continue
      , continued_to = %(successor)s::text
--]
--[suspend
      , wake_at = CASE
            WHEN (runs.cancel_requested AND NOT %(cancel_delivered)s::boolean)
              OR (cardinality(%(wake_signals)s::text[]) > 0 AND (
                  EXISTS (
                      SELECT 1 FROM signals s
                      WHERE s.run_id = runs.run_id AND s.consumed_seq IS NULL
                        AND s.name = ANY (%(wake_signals)s::text[])
                        AND s.id IS DISTINCT FROM %(signal_id)s::bigint)  -- consumed now
                  OR (runs.wake_at IS NOT NULL AND runs.xmin <> (
                      SELECT seen.xmin FROM runs seen WHERE seen.run_id = runs.run_id))))
              OR (cardinality(%(wake_tasks)s::text[]) > 0 AND (
                  EXISTS (
                      SELECT 1 FROM tasks t
                      WHERE t.run_id = runs.run_id AND t.state IN ('completed', 'failed')
                        AND t.command = ANY (%(wake_tasks)s::text[]))
                  OR runs.xmin <> (
                      SELECT seen.xmin FROM runs seen WHERE seen.run_id = runs.run_id)))
              OR (cardinality(%(wake_children)s::text[]) > 0 AND (
                  EXISTS (
                      SELECT 1 FROM runs c
                      WHERE c.run_id = ANY (%(wake_children)s::text[])
                        AND c.state IN ('completed', 'failed', 'cancelled', 'continued',
                                        'terminated'))
                  OR runs.xmin <> (
                      SELECT seen.xmin FROM runs seen WHERE seen.run_id = runs.run_id)))
            THEN least(coalesce(%(wake_at)s::float8, clock.now), clock.now)
            ELSE %(wake_at)s::float8
        END
--]
    FROM clock
    WHERE {fence} AND runs.next_seq = %(first_seq)s::bigint
--[signal
      AND EXISTS (
          SELECT 1 FROM signals s
          WHERE s.id = %(signal_id)s::bigint AND s.run_id = runs.run_id
            AND s.consumed_seq IS NULL)
--]
--[tasks
      AND NOT EXISTS (
          SELECT 1 FROM tasks t
          WHERE t.run_id = runs.run_id AND t.command = ANY (%(task_commands)s::text[]))
--]
    RETURNING runs.run_id, runs.parent_run_id, runs.state, runs.cancel_requested, clock.now
), appended AS (
    INSERT INTO events (run_id, seq, type, command, data, created_at)
    SELECT fenced.run_id, %(first_seq)s::bigint + e.i - 1, e.type, e.command, e.data, fenced.now
--[one
    FROM fenced, (VALUES (%(type)s::text, %(command)s::text, %(data)s::bytea, 1::bigint))
                 AS e (type, command, data, i)
--]
--[many
    FROM fenced, unnest(%(types)s::text[], %(commands)s::text[], %(datas)s::bytea[])
                 WITH ORDINALITY AS e (type, command, data, i)
--]
)
--[signal
, consumed AS (
    UPDATE signals SET consumed_seq = %(first_seq)s::bigint
    FROM fenced
    WHERE signals.id = %(signal_id)s::bigint AND signals.run_id = fenced.run_id
)
--]
--[born
, born AS (
    SELECT b.*, NULL::text AS lease_owner, NULL::float8 AS lease_ttl,
           coalesce(b.run_id = %(successor)s::text AND fenced.cancel_requested
                    -- a child of a run this turn ends: closed as {family} closes the others
                    OR (fenced.state IN ('completed', 'failed', 'cancelled', 'continued')
                        AND b.parent_run_id = fenced.run_id
                        AND (b.parent_close = 'cancel'
                             OR (b.parent_close = 'wait' AND fenced.state = 'cancelled'))),
                    false) AS cancel_requested
    FROM fenced,
         unnest(%(run_ids)s::text[], %(workflows)s::text[], %(versions)s::text[],
                %(inputs)s::bytea[], %(parent_run_ids)s::text[], %(parent_closes)s::text[],
                %(depths)s::smallint[], %(chain_ids)s::text[], %(generations)s::integer[],
                %(started_types)s::text[], %(started_commands)s::text[],
                %(started_datas)s::bytea[])
             AS b (run_id, workflow, version, input, parent_run_id, parent_close, depth,
                   chain_id, generation, started_type, started_command, started_data)
), created AS (
    INSERT INTO runs {new_runs}
    RETURNING run_id
), {new_run_rows}
--]
--[tasks
, new_tasks AS (
    SELECT nextval('tasks_task_id_seq') AS task_id, t.*
    FROM fenced,
         unnest(%(task_commands)s::text[], %(steps)s::text[], %(queues)s::text[],
                %(priorities)s::bigint[], %(args)s::bytea[], %(max_attempts)s::bigint[])
             WITH ORDINALITY AS t (command, step, queue, priority, args, max_attempts, i)
    ORDER BY t.i
), dispatched AS (
    -- A turn that ends the run drops them at once, as {family} drops the others.
    INSERT INTO tasks (task_id, run_id, command, step, queue, priority, args, attempt,
                       max_attempts, state, available_at, created_at)
    SELECT t.task_id, fenced.run_id, t.command, t.step, t.queue, t.priority, t.args, 1,
           t.max_attempts, 'available', fenced.now, fenced.now
    FROM fenced, new_tasks t
    WHERE fenced.state IN ('running', 'suspended')
)
--]
--[finish continue
, ended AS (
    SELECT run_id, parent_run_id, state FROM fenced
), {family}
--]
--[finish
, outcome AS (
    UPDATE run_payloads SET result = %(result)s::bytea, error = %(error)s::bytea
    FROM fenced
    WHERE run_payloads.run_id = fenced.run_id
)
--]
--[continue
, moved AS (
    UPDATE signals SET run_id = %(successor)s::text
    FROM fenced
    WHERE signals.run_id = fenced.run_id AND signals.consumed_seq IS NULL
      AND signals.id IS DISTINCT FROM %(signal_id)s::bigint
)
--]
--[notify
, notified AS (
    SELECT count(pg_notify(%(channel)s::text, kind))
    FROM fenced, unnest(string_to_array(%(notify)s::text, ',')) AS kind
)
--]
SELECT fenced.run_id
--[tasks
     , new_tasks.task_id, new_tasks.command
--]
FROM fenced
--[notify
CROSS JOIN notified
--]
--[finish continue
CROSS JOIN family_notified
--]
--[tasks
LEFT JOIN new_tasks ON true
--]

-- name: lock_run
-- A continue's first statement: waits for (and then holds) the run row, so
-- that the commit, which takes its snapshot after this one, sees every signal
-- committed before it (and moves it), while a signal sent after it waits,
-- finds the run continued and goes to the successor.
SELECT 1 FROM runs WHERE run_id = %(run_id)s::text FOR UPDATE;

-- name: fence_row
-- Read only after a fenced write matched nothing, to say why.
SELECT state, lease_owner, lease_token, lease_expires_at, next_seq,
       extract(epoch FROM clock_timestamp())::float8 AS now,
       EXISTS (
           SELECT 1 FROM signals s
           WHERE s.id = %(signal_id)s::bigint AND s.run_id = runs.run_id
             AND s.consumed_seq IS NULL) AS signal_ok,
       EXISTS (
           SELECT 1 FROM tasks t
           WHERE t.run_id = runs.run_id AND t.command = ANY (%(task_commands)s::text[]))
           AS tasks_taken
FROM runs WHERE run_id = %(run_id)s::text;

-- name: save_snapshot
-- Fenced like a commit, without touching the runs row (it stays HOT): FOR
-- SHARE holds the lease check until the commit. The run's latest snapshot is
-- replaced in place; no row back means the fence failed.
WITH {clock}, fenced AS (
    SELECT runs.run_id, runs.next_seq, clock.now
    FROM runs, clock
    WHERE {fence}
    FOR SHARE OF runs
), saved AS (
    INSERT INTO snapshots (run_id, upto_seq, version, format, data, created_at)
    SELECT fenced.run_id, %(upto_seq)s::bigint, %(version)s::text, %(format)s::integer,
           %(data)s::bytea, fenced.now
    FROM fenced
    WHERE %(upto_seq)s::bigint >= 0 AND %(upto_seq)s::bigint < fenced.next_seq
    ON CONFLICT (run_id) DO UPDATE SET
        upto_seq = EXCLUDED.upto_seq, version = EXCLUDED.version, format = EXCLUDED.format,
        data = EXCLUDED.data, created_at = EXCLUDED.created_at
)
SELECT next_seq FROM fenced;

-- name: load_snapshot
SELECT run_id, upto_seq, version, format, data, created_at
FROM snapshots WHERE run_id = %(run_id)s::text;

-- name: request_cancel
-- A run that journaled nothing but its start (next_seq = 1) and that no live
-- lease holds is cancelled at once: the cancelled event is journaled at its
-- next seq, an expired lease is dropped, and it ends (see {family}). Any other
-- unfinished run gets cancel_requested and is made due; its holder, or the
-- next worker to claim it, delivers the request to the workflow. FOR UPDATE
-- makes the test read the latest row version (a claim may commit meanwhile)
-- and hold it until the UPDATE. No row back: the run is not live.
WITH {clock}, target AS (
    SELECT runs.run_id,
           NOT coalesce(runs.state = 'running' AND runs.lease_expires_at >= clock.now, false)
               AND runs.next_seq <= 1 AS at_once
    FROM runs, clock
    WHERE runs.run_id = %(run_id)s::text AND {live}
    FOR UPDATE OF runs
), updated AS (
    UPDATE runs
    SET cancel_requested = true,
        updated_at = clock.now,
        state = CASE WHEN target.at_once THEN 'cancelled' ELSE runs.state END,
        next_seq = CASE WHEN target.at_once THEN runs.next_seq + 1 ELSE runs.next_seq END,
        wake_at = CASE WHEN NOT target.at_once
                       THEN least(coalesce(runs.wake_at, clock.now), clock.now) END,
        lease_owner = CASE WHEN NOT target.at_once THEN runs.lease_owner END,
        lease_expires_at = CASE WHEN NOT target.at_once THEN runs.lease_expires_at END
    FROM clock, target
    WHERE runs.run_id = target.run_id
    RETURNING runs.run_id, runs.state, runs.next_seq, runs.parent_run_id, clock.now
), ended AS (
    SELECT run_id, parent_run_id, state FROM updated WHERE state = 'cancelled'
), cancelled AS (
    INSERT INTO events (run_id, seq, type, command, data, created_at)
    SELECT run_id, next_seq - 1, %(type)s::text, %(command)s::text, %(data)s::bytea, now
    FROM updated WHERE state = 'cancelled'
), {family}, notified AS (
    SELECT count(pg_notify(%(channel)s::text, 'cancel')) FROM updated
)
SELECT updated.state FROM updated, notified;

-- name: chain_tip
-- The last run of the continue-as-new chain that goes through run_id (the run
-- itself if it did not continue), and its state.
WITH RECURSIVE chain AS (
    SELECT run_id, state, continued_to, 0 AS n FROM runs WHERE run_id = %(run_id)s::text
    UNION ALL
    SELECT r.run_id, r.state, r.continued_to, chain.n + 1
    FROM runs r JOIN chain ON r.run_id = chain.continued_to
)
SELECT run_id, state FROM chain ORDER BY n DESC LIMIT 1;

-- Operator actions (admin.py): each runs its statements in one explicit
-- transaction, the run row locked first (FOR UPDATE) so that a worker's commit
-- waits for it and then fails its fence. ---------------------------------------------

-- name: lock_live_run
-- The row an action works on, locked; its journal's next seq, whether a cancel
-- request reached the workflow, and the clock.
SELECT runs.run_id, runs.state, runs.next_seq, runs.continued_to, runs.cancel_requested,
       runs.lease_owner, runs.lease_expires_at, runs.updated_at, clock.now,
       EXISTS (SELECT 1 FROM events e
               WHERE e.run_id = runs.run_id AND e.type = 'cancel_requested') AS delivered
FROM runs, (SELECT extract(epoch FROM clock_timestamp())::float8 AS now) AS clock
WHERE runs.run_id = %(run_id)s::text
FOR UPDATE OF runs;

-- name: append_event
INSERT INTO events (run_id, seq, type, command, data, created_at)
VALUES (%(run_id)s::text, %(seq)s::bigint, %(type)s::text, %(command)s::text,
        %(data)s::bytea, %(now)s::float8)
RETURNING seq;

-- name: terminate_run
-- After its run_terminated event: ended at once, its lease cleared under a new
-- token (a holder's next write fails its fence), no wake-up left; then its
-- family as for any end.
WITH {clock}, terminated AS (
    UPDATE runs
    SET state = 'terminated', next_seq = next_seq + 1, lease_owner = NULL,
        lease_expires_at = NULL, lease_token = nextval('lease_tokens'), wake_at = NULL,
        updated_at = clock.now
    FROM clock
    WHERE runs.run_id = %(run_id)s::text
    RETURNING runs.run_id, runs.parent_run_id, runs.state
), ended AS (
    SELECT run_id, parent_run_id, state FROM terminated
), {family}, notified AS (
    SELECT count(pg_notify(%(channel)s::text, 'terminated')) FROM terminated
)
SELECT 1 FROM terminated, notified, family_notified;

-- name: resume_run
-- Due now, an undelivered cancel request withdrawn; a running run loses its
-- lease (suspended, under a new token: the holder's next write fails its fence).
WITH {clock}, resumed AS (
    UPDATE runs
    SET state = CASE WHEN runs.state = 'running' THEN 'suspended' ELSE runs.state END,
        lease_token = CASE WHEN runs.state = 'running' THEN nextval('lease_tokens')
                           ELSE runs.lease_token END,
        lease_owner = NULL, lease_expires_at = NULL, wake_at = clock.now,
        cancel_requested = false, updated_at = clock.now,
        next_seq = runs.next_seq + %(appended)s::bigint  -- timers fired by the operator
    FROM clock
    WHERE runs.run_id = %(run_id)s::text
    RETURNING runs.run_id
), notified AS (
    SELECT count(pg_notify(%(channel)s::text, 'resumed')) FROM resumed
)
SELECT 1 FROM resumed, notified;

-- name: fork_run
-- A retry or fork: the run (pending, due now) with its started event at seq 0
-- and the copied journal from seq 1, and (redeliver) the original's signals not
-- consumed below the fork point, oldest first. Nothing comes back if the run
-- id is taken (the caller checked the original exists, under FOR SHARE).
WITH {clock}, created AS (
    INSERT INTO runs (run_id, workflow, version, state, created_at, updated_at, wake_at,
                      lease_token, next_seq, forked_from, fork_seq)
    SELECT %(run_id)s::text, %(workflow)s::text, %(version)s::text, 'pending', clock.now,
           clock.now, clock.now, 0, 1 + cardinality(%(types)s::text[]),
           %(forked_from)s::text, %(fork_seq)s::bigint
    FROM clock
    ON CONFLICT (run_id) DO NOTHING
    RETURNING run_id, created_at
), payload AS (
    INSERT INTO run_payloads (run_id, input)
    SELECT run_id, %(input)s::bytea FROM created
), journal AS (
    INSERT INTO events (run_id, seq, type, command, data, created_at)
    SELECT created.run_id, 0, %(started_type)s::text, NULL, %(started_data)s::bytea,
           created.created_at
    FROM created
    UNION ALL
    SELECT created.run_id, e.i, e.type, e.command, e.data, created.created_at
    FROM created, unnest(%(types)s::text[], %(commands)s::text[], %(datas)s::bytea[])
                  WITH ORDINALITY AS e (type, command, data, i)
), redelivered AS (
    INSERT INTO signals (run_id, name, payload, created_at, delivery_id, chain_id)
    SELECT created.run_id, s.name, s.payload, s.created_at, s.delivery_id,
           CASE WHEN s.delivery_id IS NOT NULL THEN created.run_id END
    FROM created, signals s
    WHERE %(redeliver)s::boolean AND s.run_id = %(forked_from)s::text
      AND (s.consumed_seq IS NULL OR s.consumed_seq >= %(fork_seq)s::bigint)
    ORDER BY s.id
), notified AS (
    SELECT count(pg_notify(%(channel)s::text, 'created')) FROM created
)
SELECT run_id FROM created, notified;

-- name: lock_source
SELECT 1 FROM runs WHERE run_id = %(run_id)s::text FOR SHARE;

-- name: forks
SELECT {run_row}
FROM runs r JOIN run_payloads p ON p.run_id = r.run_id
WHERE r.forked_from = %(run_id)s::text
ORDER BY r.created_at, r.run_id;

-- name: prunable
-- Runs prune may delete, a continue-as-new chain whole. Every run of r's chain
-- (r too) has ended, before %(before)s; the chain ended in one of %(states)s
-- (its `continued` runs go with how its last run ended); no run of it has a
-- live parent or a live child. Walks runs_ended by end time; a chain's earlier
-- runs ended first, so a batch cut never strands them.
SELECT r.run_id FROM runs r
WHERE r.ended_at < %(before)s::float8
  AND NOT EXISTS (
      SELECT 1 FROM runs m
      WHERE (m.run_id = coalesce(r.chain_id, r.run_id)
             OR m.chain_id = coalesce(r.chain_id, r.run_id))
        AND (m.state IN ('pending', 'running', 'suspended')
             OR m.updated_at >= %(before)s::float8
             OR (m.state <> 'continued' AND NOT m.state = ANY (%(states)s::text[]))
             OR EXISTS (
                 SELECT 1 FROM runs p
                 WHERE p.run_id = m.parent_run_id
                   AND p.state IN ('pending', 'running', 'suspended'))
             OR EXISTS (
                 SELECT 1 FROM runs c
                 WHERE c.parent_run_id = m.run_id
                   AND c.state IN ('pending', 'running', 'suspended'))))
ORDER BY r.ended_at, r.run_id

-- name: count_prunable
SELECT count(*) AS n FROM ({prunable}) AS prunable;

-- name: prune_runs
-- The payload, journal, signals, tasks and snapshot go with each run (ON
-- DELETE CASCADE). SKIP LOCKED: a run a concurrent action holds waits for the
-- next batch.
WITH chosen AS (
    SELECT runs.run_id FROM runs
    WHERE runs.run_id IN (SELECT run_id FROM ({prunable}) AS prunable LIMIT %(limit)s::bigint)
    FOR UPDATE SKIP LOCKED
), deleted AS (
    DELETE FROM runs USING chosen WHERE runs.run_id = chosen.run_id RETURNING 1
)
SELECT count(*) AS n FROM deleted;

-- Signals ------------------------------------------------------------------------------

-- name: send_signal
-- Commit before wake: the run becomes due in the statement that buffers the
-- signal. Locking the run row before the INSERT takes an id serialises the
-- senders of one run (id order is delivery order) and orders them against a
-- suspend. A delivery id the chain has seen, or a pending cancel request,
-- writes nothing; the unique index (ON CONFLICT) catches a concurrent repeat
-- that the statement's snapshot cannot see. Returns no row if the run is not
-- live (ended, continued, unknown): the caller follows the chain.
WITH {clock}, target AS (
    SELECT run_id, coalesce(chain_id, run_id) AS chain, cancel_requested
    FROM runs
    WHERE run_id = %(run_id)s::text AND {live}
    FOR UPDATE
), seen AS (
    SELECT 1 FROM signals, target
    WHERE signals.chain_id = target.chain AND signals.delivery_id = %(delivery_id)s::text
), woken AS (
    UPDATE runs SET {wake}
    FROM clock, target
    WHERE runs.run_id = target.run_id AND NOT target.cancel_requested
      AND NOT EXISTS (SELECT 1 FROM seen)
    RETURNING runs.run_id, clock.now, target.chain
), inserted AS (
    INSERT INTO signals (run_id, name, payload, created_at, delivery_id, chain_id)
    SELECT run_id, %(name)s::text, %(payload)s::bytea, now, %(delivery_id)s::text,
           CASE WHEN %(delivery_id)s::text IS NOT NULL THEN chain END
    FROM woken
    ON CONFLICT (chain_id, delivery_id) WHERE delivery_id IS NOT NULL DO NOTHING
    RETURNING id
), notified AS (
    SELECT count(pg_notify(%(channel)s::text, 'signal')) FROM woken
)
SELECT target.cancel_requested, EXISTS (SELECT 1 FROM seen) AS seen,
       (SELECT id FROM inserted) AS id
FROM target, notified;

-- name: signal_delivered
-- A signal with this delivery id was sent to the chain of run %(run_id)s already.
SELECT 1 FROM signals
WHERE delivery_id = %(delivery_id)s::text
  AND chain_id = (SELECT coalesce(chain_id, run_id) FROM runs WHERE run_id = %(run_id)s::text);

-- name: next_signal
SELECT id, run_id, name, payload, created_at FROM signals
WHERE run_id = %(run_id)s::text AND name = %(name)s::text AND consumed_seq IS NULL
ORDER BY id LIMIT 1;

-- Facts --------------------------------------------------------------------------------

-- name: save_fact
-- The first write wins; a repeat (same digest, so the same bytes) writes nothing.
INSERT INTO facts (digest, data, created_at)
VALUES (%(digest)s::text, %(data)s::bytea, extract(epoch FROM clock_timestamp()))
ON CONFLICT (digest) DO NOTHING
RETURNING digest;

-- name: load_facts
SELECT digest, data FROM facts WHERE digest = ANY (%(digests)s::text[]);

-- Idempotency keys ---------------------------------------------------------------------

-- name: get_idempotent
-- An entry older than max_age seconds (database clock) counts as missing.
SELECT result FROM idempotency_keys
WHERE scope = %(scope)s::text AND key = %(key)s::text
  AND (%(max_age)s::float8 IS NULL
       OR created_at >= extract(epoch FROM clock_timestamp()) - %(max_age)s::float8);

-- name: put_idempotent
-- Returns the row only when this call stored it; the loser reads the winner's.
-- An entry older than max_age is replaced: ON CONFLICT DO UPDATE locks the
-- row and checks the WHERE on its newest version, so of concurrent puts after
-- the expiry one replaces it and the others find it fresh and lose.
INSERT INTO idempotency_keys (scope, key, result, created_at)
VALUES (%(scope)s::text, %(key)s::text, %(result)s::bytea, extract(epoch FROM clock_timestamp()))
ON CONFLICT (scope, key) DO UPDATE SET result = excluded.result, created_at = excluded.created_at
WHERE %(max_age)s::float8 IS NOT NULL
  AND idempotency_keys.created_at < excluded.created_at - %(max_age)s::float8
RETURNING result;

-- Dispatched steps ---------------------------------------------------------------------
-- Task fences: the task leased to the owner at the attempt, its lease
-- unexpired on the database clock; no row back means the fence failed and
-- nothing was written. Task outcomes that wake a run notify in the same
-- statement (delivered on commit).

-- name: task_row
task_id, run_id, command, step, queue, priority, args, attempt, max_attempts, state,
       available_at, lease_owner, lease_expires_at, result, error, created_at

-- name: end_attempts
-- The attempts of the CTE "ending" (task_id, result, error, retry_at; rows it
-- locked) end: completed with a result; else available again from retry_at
-- at the next attempt (retry_at is NULL when none is left); else failed for
-- good, keeping its last error when it brings none. A task that ended makes
-- its run due (a running one too: its holder's suspend then sees its row
-- changed), and task workers are notified.
attempts AS (
    UPDATE tasks
    SET state = CASE WHEN ending.result IS NOT NULL THEN 'completed'
                     WHEN ending.retry_at IS NOT NULL THEN 'available'
                     ELSE 'failed' END,
        available_at = coalesce(ending.retry_at, tasks.available_at),
        attempt = tasks.attempt + (ending.retry_at IS NOT NULL)::integer,
        result = ending.result, error = coalesce(ending.error, tasks.error),
        lease_owner = NULL, lease_expires_at = NULL
    FROM ending
    WHERE tasks.task_id = ending.task_id
    RETURNING tasks.run_id, tasks.state
), task_woken AS (
    UPDATE runs SET {wake}
    FROM clock
    WHERE {live} AND runs.run_id IN (
        SELECT run_id FROM attempts WHERE state IN ('completed', 'failed'))
), task_notified AS (
    SELECT count(pg_notify(%(channel)s::text, 'task'))
    FROM (SELECT 1 FROM attempts LIMIT 1) AS any_attempt
)

-- name: sweep_tasks
-- An expired task lease consumes its attempt: available again at once at the
-- next attempt, or failed for good when none is left (error: the JSON of
-- _checks.lease_expired_error). Run by claim_tasks in the transaction of its
-- claim, just before it. Rows another sweeper holds are skipped. At most 500
-- per claim, oldest expiry first, so that a mass expiry (a fleet of task
-- workers lost) is worked off in short transactions.
WITH {clock}, expired AS (
    SELECT tasks.task_id, tasks.attempt, tasks.attempt < tasks.max_attempts AS retry
    FROM tasks, clock
    WHERE tasks.state = 'leased' AND tasks.lease_expires_at < clock.now
    ORDER BY tasks.lease_expires_at
    LIMIT 500
    FOR UPDATE OF tasks SKIP LOCKED
), ending AS (
    SELECT expired.task_id, NULL::bytea AS result,
           CASE WHEN expired.retry THEN clock.now END AS retry_at,
           convert_to(jsonb_build_object(
               'type', 'keel.errors.StepTimeoutError',
               'message', 'task lease expired on attempt ' || expired.attempt
                          || CASE WHEN expired.retry THEN '' ELSE ' and no attempts are left' END,
               'traceback', '')::text, 'UTF8') AS error
    FROM expired, clock
), {end_attempts}
SELECT count(*) AS n FROM attempts, task_notified;

-- name: lock_queues
-- Before claim_tasks, in its transaction: lock the limit rows of the capped
-- queues being claimed, in queue order (no deadlock between claimers). Claims
-- of one capped queue so take turns, and the claim statement that follows,
-- with a snapshot of its own, counts the leases of every claim before it.
SELECT queue FROM queues
WHERE queue = ANY (%(queues)s::text[])
ORDER BY queue
FOR UPDATE;

-- name: claim_tasks
-- Due tasks of the queues in claim order, skipping rows another claimer holds,
-- leased at their current attempt; for a capped queue at most its room (limit
-- minus leased tasks). A queue with no room is left out before the LIMIT so it
-- cannot crowd out the others. Exactly one row comes back when nothing was
-- claimed (task_id NULL): the database clock, as in claim_runs.
WITH {clock}, room AS MATERIALIZED (
    SELECT q.queue,
           q.concurrency - (SELECT count(*) FROM tasks l
                            WHERE l.queue = q.queue AND l.state = 'leased') AS free
    FROM queues q
    WHERE q.queue = ANY (%(queues)s::text[])
), due AS (
    SELECT tasks.task_id, tasks.queue, tasks.priority, tasks.available_at FROM tasks, clock
    WHERE tasks.state = 'available' AND tasks.available_at <= clock.now
      AND tasks.queue = ANY (%(queues)s::text[])
      AND NOT EXISTS (SELECT 1 FROM room WHERE room.queue = tasks.queue AND room.free <= 0)
    ORDER BY tasks.priority DESC, tasks.available_at, tasks.task_id
    LIMIT %(limit)s::bigint
    FOR UPDATE OF tasks SKIP LOCKED
), ranked AS (
    SELECT due.task_id, room.free,
           row_number() OVER (PARTITION BY due.queue
                              ORDER BY due.priority DESC, due.available_at, due.task_id) AS n
    FROM due LEFT JOIN room ON room.queue = due.queue
), claimed AS (
    UPDATE tasks
    SET state = 'leased', lease_owner = %(owner)s::text,
        lease_expires_at = clock.now + %(ttl)s::float8
    FROM ranked, clock
    WHERE tasks.task_id = ranked.task_id AND (ranked.free IS NULL OR ranked.n <= ranked.free)
    RETURNING tasks.*
)
SELECT clock.now, {task_row}
FROM clock LEFT JOIN claimed ON true
ORDER BY priority DESC, available_at, task_id;

-- name: renew_task_leases
WITH {clock}, renewed AS (
    UPDATE tasks SET lease_expires_at = clock.now + %(ttl)s::float8
    FROM clock, unnest(%(task_ids)s::bigint[], %(attempts)s::bigint[]) AS held (task_id, attempt)
    WHERE tasks.task_id = held.task_id AND tasks.attempt = held.attempt
      AND tasks.state = 'leased' AND {held}
    RETURNING tasks.task_id
)
SELECT clock.now, array(SELECT task_id FROM renewed) AS renewed FROM clock;

-- name: end_attempt
-- One attempt ends (see {end_attempts}), fenced by its task lease; a retry
-- only while an attempt is left.
WITH {clock}, ending AS (
    SELECT tasks.task_id, %(result)s::bytea AS result, %(error)s::bytea AS error,
           CASE WHEN tasks.attempt < tasks.max_attempts THEN %(retry_at)s::float8 END
               AS retry_at
    FROM tasks, clock
    WHERE tasks.task_id = %(task_id)s::bigint AND tasks.attempt = %(attempt)s::bigint
      AND tasks.state = 'leased' AND {held}
    FOR UPDATE OF tasks
), {end_attempts}
SELECT 1 FROM attempts, task_notified;

-- name: task_fence_row
-- Read only after a fenced task write matched nothing, to say why.
SELECT run_id, state, lease_owner, attempt, lease_expires_at,
       extract(epoch FROM clock_timestamp())::float8 AS now
FROM tasks WHERE task_id = %(task_id)s::bigint;

-- name: get_task
SELECT {task_row}
FROM tasks WHERE run_id = %(run_id)s::text AND command = %(command)s::text;

-- name: set_queue_limit
-- A NULL concurrency removes the limit. Notify: a raised or removed limit lets
-- waiting claimers take more at once.
WITH upserted AS (
    INSERT INTO queues (queue, concurrency)
    SELECT %(queue)s::text, %(concurrency)s::integer
    WHERE %(concurrency)s::integer IS NOT NULL
    ON CONFLICT (queue) DO UPDATE SET concurrency = excluded.concurrency
    RETURNING queue
), deleted AS (
    DELETE FROM queues
    WHERE queue = %(queue)s::text AND %(concurrency)s::integer IS NULL
    RETURNING queue
)
SELECT pg_notify(%(channel)s::text, 'task')
FROM (SELECT queue FROM upserted UNION ALL SELECT queue FROM deleted) AS changed;

-- name: list_queues
-- Queues with a limit or with open tasks; the counts walk the partial indexes.
WITH open AS (
    SELECT queue,
           count(*) FILTER (WHERE state = 'available') AS available,
           count(*) FILTER (WHERE state = 'leased') AS leased
    FROM tasks WHERE state IN ('available', 'leased')
    GROUP BY queue
)
SELECT coalesce(q.queue, o.queue) AS queue, q.concurrency,
       coalesce(o.available, 0) AS available, coalesce(o.leased, 0) AS leased
FROM queues q FULL JOIN open o ON o.queue = q.queue
ORDER BY 1;

-- Schedules ----------------------------------------------------------------------------
-- Creating or resuming one notifies 'schedule', so schedule loops sleeping
-- until a later tick look again.

-- name: schedule_row
schedule_id, workflow, input, cron, at, timezone, next_fire_at, paused, overlap,
       catchup_window, last_fire_at, last_run_id, created_at, updated_at

-- name: create_schedule
-- A row comes back only when this call inserted the schedule.
WITH {clock}, inserted AS (
    INSERT INTO schedules (schedule_id, workflow, input, cron, at, timezone, next_fire_at,
                           overlap, catchup_window, created_at, updated_at)
    SELECT %(schedule_id)s::text, %(workflow)s::text, %(input)s::bytea, %(cron)s::text,
           %(at)s::float8, %(timezone)s::text, %(next_fire_at)s::float8, %(overlap)s::text,
           %(catchup_window)s::float8, clock.now, clock.now
    FROM clock
    ON CONFLICT (schedule_id) DO NOTHING
    RETURNING {schedule_row}
), notified AS (
    SELECT count(pg_notify(%(channel)s::text, 'schedule')) FROM inserted
)
SELECT inserted.* FROM inserted, notified;

-- name: get_schedules
-- One schedule (schedule_id), or every one (of workflow), by id.
SELECT {schedule_row}
FROM schedules
WHERE (%(schedule_id)s::text IS NULL OR schedule_id = %(schedule_id)s::text)
  AND (%(workflow)s::text IS NULL OR workflow = %(workflow)s::text)
ORDER BY schedule_id;

-- name: set_paused
-- Pause, or resume from next_fire_at. The schedule as it is afterwards: the
-- updated row, or (already so) the row as it was; nothing when it does not
-- exist. Resuming an active schedule must not move its next tick.
WITH {clock}, changed AS (
    UPDATE schedules
    SET paused = %(paused)s::boolean, updated_at = clock.now,
        next_fire_at = CASE WHEN %(paused)s::boolean THEN next_fire_at
                            ELSE %(next_fire_at)s::float8 END
    FROM clock
    WHERE schedule_id = %(schedule_id)s::text AND paused <> %(paused)s::boolean
    RETURNING {schedule_row}
), notified AS (
    SELECT count(pg_notify(%(channel)s::text, 'schedule')) FROM changed WHERE NOT paused
)
SELECT changed.* FROM changed, notified
UNION ALL
SELECT {schedule_row}
FROM schedules
WHERE schedule_id = %(schedule_id)s::text AND NOT EXISTS (SELECT FROM changed);

-- name: delete_schedule
DELETE FROM schedules WHERE schedule_id = %(schedule_id)s::text RETURNING schedule_id;

-- name: due_schedules
-- The database clock, the earliest next fire time of the caller's workflows'
-- active schedules, then the due ones (schedules_due, earliest first). Exactly
-- one row (schedule columns NULL) when none is due.
WITH {clock}, due AS (
    SELECT {schedule_row}
    FROM schedules, clock
    WHERE NOT paused AND next_fire_at <= clock.now AND workflow = ANY (%(workflows)s::text[])
    ORDER BY next_fire_at, schedule_id
    LIMIT %(limit)s::bigint
)
SELECT clock.now,
       (SELECT min(next_fire_at) FROM schedules
        WHERE NOT paused AND workflow = ANY (%(workflows)s::text[])) AS next_at,
       due.*
FROM clock LEFT JOIN due ON true
ORDER BY due.next_fire_at, due.schedule_id;

-- name: fire_schedule
-- The compare-and-set that makes a tick fire once: only while next_fire_at is
-- still the due time the caller read, the schedule is not paused and the tick
-- is due on the database clock. A concurrent firer of the same tick waits for
-- the row, then finds next_fire_at moved and matches nothing. The tick's run
-- (when given; NULL run_id skips the tick) goes in with it as in create_run;
-- a run id that exists already is left alone. A row comes back when it fired.
WITH {clock}, fired AS (
    UPDATE schedules
    SET next_fire_at = %(next_fire_at)s::float8,
        last_fire_at = coalesce(%(fired_tick)s::float8, last_fire_at),
        last_run_id = coalesce(%(run_id)s::text, last_run_id),
        updated_at = clock.now
    FROM clock
    WHERE schedule_id = %(schedule_id)s::text AND NOT paused
      AND next_fire_at = %(expected)s::float8 AND %(tick)s::float8 <= clock.now
    RETURNING schedule_id
), born AS (
    {one_run}
    FROM fired WHERE %(run_id)s::text IS NOT NULL
), created AS (
    INSERT INTO runs {new_runs}
    ON CONFLICT (run_id) DO NOTHING
    RETURNING run_id
), {new_run_rows}, notified AS (
    SELECT count(pg_notify(%(channel)s::text, 'created')) FROM created
)
SELECT fired.schedule_id FROM fired, notified;

-- Workers ------------------------------------------------------------------------------

-- name: register_worker
-- Run on the worker's liveness connection once it holds its advisory lock:
-- from now on a missing lock means a dead worker (see liveness.py).
INSERT INTO worker_locks (owner, lock_key, started_at)
VALUES (%(owner)s::text, %(lock_key)s::bigint, extract(epoch FROM clock_timestamp())::float8)
ON CONFLICT (owner) DO UPDATE SET lock_key = EXCLUDED.lock_key;

-- name: worker_registered
SELECT EXISTS (SELECT 1 FROM worker_locks WHERE owner = %(owner)s::text) AS registered;

-- name: unregister_worker
DELETE FROM worker_locks WHERE owner = %(owner)s::text;

-- name: take_liveness
SELECT pg_try_advisory_lock(%(lock_class)s::int4, %(lock_key)s::int4) AS taken;

-- name: expire_dead_owners
-- Registered workers whose advisory lock no session holds are dead: their
-- leases expire now (the next claim takes each under a larger token, so
-- fencing is exactly as after a TTL expiry) and they are unregistered. A
-- worker registers only after taking its lock, so a registered owner seen
-- without one has lost its session.
WITH {clock}, held AS MATERIALIZED (
    SELECT l.objid::bigint AS lock_key
    FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
      AND l.classid = %(lock_class)s::bigint::oid
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
), dead AS MATERIALIZED (
    SELECT w.owner FROM worker_locks w
    WHERE w.lock_key NOT IN (SELECT lock_key FROM held)
), expired AS (
    UPDATE runs SET lease_expires_at = clock.now
    FROM clock
    WHERE runs.state = 'running' AND runs.lease_expires_at > clock.now
      AND runs.lease_owner IN (SELECT owner FROM dead)
    RETURNING runs.run_id
), expired_tasks AS (
    -- Its dispatched steps' leases too: the next claim's sweep makes each task
    -- available again at its next attempt, as after a TTL expiry.
    UPDATE tasks SET lease_expires_at = clock.now
    FROM clock
    WHERE tasks.state = 'leased' AND tasks.lease_expires_at > clock.now
      AND tasks.lease_owner IN (SELECT owner FROM dead)
    RETURNING tasks.task_id
), forgotten AS (
    DELETE FROM worker_locks WHERE owner IN (SELECT owner FROM dead)
    RETURNING owner
), notified AS (
    SELECT count(pg_notify(%(channel)s::text, 'expired'))
    FROM (SELECT 1 FROM expired UNION ALL SELECT 1 FROM expired_tasks LIMIT 1) AS any_expired
)
SELECT (SELECT count(*) FROM expired) + (SELECT count(*) FROM expired_tasks) AS expired,
       (SELECT array_agg(owner) FROM forgotten) AS owners
FROM notified;

-- name: register_versions
-- A worker's pairs, upserted (first_seen kept from its first registration),
-- and the rows of workers not seen for a while deleted, in one statement.
WITH {clock}, pruned AS (
    DELETE FROM worker_versions USING clock
    WHERE worker_versions.last_seen < clock.now - %(kept)s::float8
), upserted AS (
    INSERT INTO worker_versions (workflow, version, worker, host, pid, first_seen, last_seen,
                                 live_until)
    SELECT pair.workflow, pair.version, %(worker)s::text, %(host)s::text, %(pid)s::integer,
           clock.now, clock.now, clock.now + %(live_for)s::float8
    FROM clock, unnest(%(workflows)s::text[], %(versions)s::text[]) AS pair (workflow, version)
    ON CONFLICT (workflow, version, worker) DO UPDATE
    SET host = excluded.host, pid = excluded.pid, last_seen = excluded.last_seen,
        live_until = excluded.live_until
    RETURNING 1
)
SELECT count(*) FROM upserted;

-- name: forget_versions
WITH gone AS (
    DELETE FROM worker_versions WHERE worker = %(worker)s::text RETURNING 1
)
SELECT count(*) FROM gone;

-- name: list_versions
SELECT workflow, version, worker, host, pid, first_seen, last_seen, live_until
FROM worker_versions
WHERE NOT %(live)s::boolean OR live_until >= extract(epoch FROM clock_timestamp())::float8
ORDER BY workflow, version, worker;

-- Graph specs (specs.py) ----------------------------------------------------------------

-- name: save_spec
-- Keeps the first spec and returns what is stored (this call's or the
-- earlier one's), for the caller to compare. A concurrent first save of the
-- same pair waits on the key and then updates nothing: the no-op update makes
-- RETURNING give the stored row in both cases.
INSERT INTO graph_specs (workflow, version, spec, created_at)
VALUES (%(workflow)s::text, %(version)s::text, %(spec)s::bytea,
        extract(epoch FROM clock_timestamp()))
ON CONFLICT (workflow, version) DO UPDATE SET workflow = graph_specs.workflow
RETURNING spec;

-- name: load_spec
SELECT spec FROM graph_specs WHERE workflow = %(workflow)s::text AND version = %(version)s::text;

-- name: list_specs
SELECT workflow, version FROM graph_specs
WHERE %(workflow)s::text IS NULL OR workflow = %(workflow)s::text
ORDER BY workflow, version;

-- Schema -------------------------------------------------------------------------------

-- name: migration_lock
-- Held until the migrating transaction ends; concurrent openers queue here.
SELECT pg_advisory_xact_lock(%(key1)s::int4, %(key2)s::int4);

-- name: schema_tables
-- Tables already in Keel's schema (none: a new database).
SELECT table_name FROM information_schema.tables
WHERE table_schema = %(schema)s::text ORDER BY table_name;

-- name: schema_meta
SELECT key, value FROM keel_meta;

-- name: set_schema_version
INSERT INTO keel_meta (key, value) VALUES ('schema_version', %(version)s::text)
ON CONFLICT (key) DO UPDATE SET value = excluded.value;
