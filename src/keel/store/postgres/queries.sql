-- Named queries of the PostgreSQL store, loaded by keel.store.postgres._sql.
-- Each starts at a "-- name: <name>" line. Tables are unqualified: every
-- connection's search_path is Keel's schema. Run rows are selected in
-- RunRecord field order (see _sql.run_record).
--
-- Every write is ONE statement run in autocommit mode (one round trip, one
-- transaction): data-modifying CTEs hang the dependent writes off the fenced
-- UPDATE, so when the fence matches nothing, nothing at all is written.
-- "clock" reads the database clock once per statement (a CTE calling a
-- volatile function is evaluated exactly once); all time comparisons use it.
-- Writes that can make a run claimable or finished call pg_notify, which
-- PostgreSQL delivers on commit (commit before wake).

-- name: now
SELECT extract(epoch FROM clock_timestamp())::float8;

-- name: get_run
SELECT r.run_id, r.workflow, r.version, r.state, p.input, p.result, p.error,
       r.created_at, r.updated_at, r.wake_at, r.lease_owner, r.lease_token,
       r.lease_expires_at, r.cancel_requested, r.next_seq,
       r.parent_run_id, r.parent_close, r.depth, r.chain_id, r.generation, r.continued_to
FROM runs r JOIN run_payloads p ON p.run_id = r.run_id
WHERE r.run_id = %(run_id)s::text;

-- name: get_runs
SELECT r.run_id, r.workflow, r.version, r.state, p.input, p.result, p.error,
       r.created_at, r.updated_at, r.wake_at, r.lease_owner, r.lease_token,
       r.lease_expires_at, r.cancel_requested, r.next_seq,
       r.parent_run_id, r.parent_close, r.depth, r.chain_id, r.generation, r.continued_to
FROM runs r JOIN run_payloads p ON p.run_id = r.run_id
WHERE r.run_id = ANY (%(run_ids)s::text[]);

-- name: create_run
-- Idempotent on run_id: a row comes back only when this call inserted the run.
-- The payload row and the started event (seq 0) go in with it. The new run is
-- claimable at once, so listeners are woken.
WITH clock AS MATERIALIZED (
    SELECT extract(epoch FROM clock_timestamp())::float8 AS now
), inserted AS (
    INSERT INTO runs (run_id, workflow, version, state, created_at, updated_at, wake_at,
                      next_seq)
    SELECT %(run_id)s::text, %(workflow)s::text, %(version)s::text, 'pending',
           clock.now, clock.now, clock.now, 1
    FROM clock
    ON CONFLICT (run_id) DO NOTHING
    RETURNING run_id, created_at
), payload AS (
    INSERT INTO run_payloads (run_id, input)
    SELECT run_id, %(input)s::bytea FROM inserted
), started AS (
    INSERT INTO events (run_id, seq, type, command, data, created_at)
    SELECT run_id, 0, %(type)s::text, %(command)s::text, %(data)s::bytea, created_at
    FROM inserted
), notified AS (
    SELECT count(pg_notify(%(channel)s::text, 'created')) FROM inserted
)
SELECT inserted.created_at FROM inserted, notified;

-- name: create_leased_run
-- Like create_run, but the run starts running under a new lease held by the
-- caller, so no other worker can claim it first (and nobody needs waking).
WITH clock AS MATERIALIZED (
    SELECT extract(epoch FROM clock_timestamp())::float8 AS now
), inserted AS (
    INSERT INTO runs (run_id, workflow, version, state, created_at, updated_at,
                      lease_owner, lease_token, lease_expires_at, next_seq)
    SELECT %(run_id)s::text, %(workflow)s::text, %(version)s::text, 'running',
           clock.now, clock.now, %(owner)s::text, nextval('lease_tokens'),
           clock.now + %(ttl)s::float8, 1
    FROM clock
    ON CONFLICT (run_id) DO NOTHING
    RETURNING run_id, created_at, lease_token, lease_expires_at
), payload AS (
    INSERT INTO run_payloads (run_id, input)
    SELECT run_id, %(input)s::bytea FROM inserted
), started AS (
    INSERT INTO events (run_id, seq, type, command, data, created_at)
    SELECT run_id, 0, %(type)s::text, %(command)s::text, %(data)s::bytea, created_at
    FROM inserted
)
SELECT created_at, lease_token, lease_expires_at FROM inserted;

-- name: list_runs
-- %(workflows)s and %(states)s are arrays (runs of any of them) or NULL (no filter).
SELECT r.run_id, r.workflow, r.version, r.state, p.input, p.result, p.error,
       r.created_at, r.updated_at, r.wake_at, r.lease_owner, r.lease_token,
       r.lease_expires_at, r.cancel_requested, r.next_seq,
       r.parent_run_id, r.parent_close, r.depth, r.chain_id, r.generation, r.continued_to
FROM runs r JOIN run_payloads p ON p.run_id = r.run_id
WHERE (%(workflows)s::text[] IS NULL OR r.workflow = ANY(%(workflows)s::text[]))
  AND (%(states)s::text[] IS NULL OR r.state = ANY(%(states)s::text[]))
  AND (%(since)s::float8 IS NULL OR r.created_at >= %(since)s::float8)
  AND (%(until)s::float8 IS NULL OR r.created_at < %(until)s::float8)
  AND (%(parent_run_id)s::text IS NULL OR r.parent_run_id = %(parent_run_id)s::text)
  AND (r.created_at, r.run_id) < (%(before_created)s::float8, %(before_run_id)s::text)
ORDER BY r.created_at DESC, r.run_id DESC
LIMIT %(limit)s::bigint;

-- name: list_runs_by_workflow
-- One workflow: walks the runs_workflow index.
SELECT r.run_id, r.workflow, r.version, r.state, p.input, p.result, p.error,
       r.created_at, r.updated_at, r.wake_at, r.lease_owner, r.lease_token,
       r.lease_expires_at, r.cancel_requested, r.next_seq,
       r.parent_run_id, r.parent_close, r.depth, r.chain_id, r.generation, r.continued_to
FROM runs r JOIN run_payloads p ON p.run_id = r.run_id
WHERE r.workflow = %(workflow)s::text
  AND (%(states)s::text[] IS NULL OR r.state = ANY(%(states)s::text[]))
  AND (%(since)s::float8 IS NULL OR r.created_at >= %(since)s::float8)
  AND (%(until)s::float8 IS NULL OR r.created_at < %(until)s::float8)
  AND (%(parent_run_id)s::text IS NULL OR r.parent_run_id = %(parent_run_id)s::text)
  AND (r.created_at, r.run_id) < (%(before_created)s::float8, %(before_run_id)s::text)
ORDER BY r.created_at DESC, r.run_id DESC
LIMIT %(limit)s::bigint;

-- name: count_runs
SELECT count(*) FROM runs r
WHERE (%(workflows)s::text[] IS NULL OR r.workflow = ANY(%(workflows)s::text[]))
  AND (%(states)s::text[] IS NULL OR r.state = ANY(%(states)s::text[]))
  AND (%(since)s::float8 IS NULL OR r.created_at >= %(since)s::float8)
  AND (%(until)s::float8 IS NULL OR r.created_at < %(until)s::float8)
  AND (%(parent_run_id)s::text IS NULL OR r.parent_run_id = %(parent_run_id)s::text);

-- name: load_events
SELECT run_id, seq, type, command, data, created_at
FROM events WHERE run_id = %(run_id)s::text AND seq > %(after_seq)s::bigint
ORDER BY seq;

-- name: claim_runs
-- Due runs and runs whose lease expired, each walking its partial index in due
-- order and skipping rows another claimer holds locked (rows locked but not
-- chosen are released at commit); the earliest `limit` of both are taken,
-- each under a new token from the sequence.
-- Only runs of the claimer's (workflow, version) pairs are taken (versions: a
-- JSON array of pairs; NULL takes every run), checked as a hashed filter on
-- the rows each index walk meets. One text parameter: cheaper to send than
-- two arrays, and never parsed by a claim that meets no due run.
-- Exactly one row comes back when nothing was claimed (run_id NULL): the
-- database clock, which the store uses to track its offset from ours.
WITH clock AS MATERIALIZED (
    SELECT extract(epoch FROM clock_timestamp())::float8 AS now
), due_runs AS (
    SELECT runs.run_id, runs.wake_at AS due
    FROM runs, clock
    WHERE runs.state IN ('pending', 'suspended') AND runs.wake_at <= clock.now
      AND (%(versions)s::json IS NULL OR (runs.workflow, runs.version) IN (
          SELECT p ->> 0, p ->> 1 FROM json_array_elements(%(versions)s::json) AS p))
    ORDER BY runs.wake_at
    LIMIT %(limit)s::bigint
    FOR UPDATE OF runs SKIP LOCKED
), expired_leases AS (
    SELECT runs.run_id, runs.lease_expires_at AS due
    FROM runs, clock
    WHERE runs.state = 'running' AND runs.lease_expires_at < clock.now
      AND (%(versions)s::json IS NULL OR (runs.workflow, runs.version) IN (
          SELECT p ->> 0, p ->> 1 FROM json_array_elements(%(versions)s::json) AS p))
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
    RETURNING runs.run_id, runs.workflow, runs.version, runs.state, runs.created_at,
              runs.updated_at, runs.wake_at, runs.lease_owner, runs.lease_token,
              runs.lease_expires_at, runs.cancel_requested, runs.next_seq,
              runs.parent_run_id, runs.parent_close, runs.depth, runs.chain_id,
              runs.generation, runs.continued_to, chosen.due
)
SELECT clock.now,
       c.run_id, c.workflow, c.version, c.state, p.input, p.result, p.error,
       c.created_at, c.updated_at, c.wake_at, c.lease_owner, c.lease_token,
       c.lease_expires_at, c.cancel_requested, c.next_seq,
       c.parent_run_id, c.parent_close, c.depth, c.chain_id, c.generation, c.continued_to
FROM clock
LEFT JOIN (claimed c JOIN run_payloads p ON p.run_id = c.run_id) ON true
ORDER BY c.due, c.run_id;

-- name: renew_leases
-- An expired lease cannot be renewed: another worker may already have claimed
-- the run. Returns the clock, the new expiry, and which runs were renewed and
-- which of those have a cancel request.
WITH clock AS MATERIALIZED (
    SELECT extract(epoch FROM clock_timestamp())::float8 AS now
), renewed AS (
    UPDATE runs SET lease_expires_at = clock.now + %(ttl)s::float8
    FROM clock, unnest(%(run_ids)s::text[], %(tokens)s::bigint[]) AS held (run_id, token)
    WHERE runs.run_id = held.run_id AND runs.lease_token = held.token
      AND runs.lease_owner = %(owner)s::text AND runs.state = 'running'
      AND runs.lease_expires_at >= clock.now
    RETURNING runs.run_id, runs.cancel_requested
)
SELECT clock.now, clock.now + %(ttl)s::float8,
       array(SELECT run_id FROM renewed),
       array(SELECT run_id FROM renewed WHERE cancel_requested)
FROM clock;

-- name: append_events
-- The hot path, one round trip per step. The fence: the lease's token and
-- owner, state running, the lease unexpired on the database clock, the journal
-- continuing at first_seq, and (if one is consumed) the signal unconsumed and
-- the run's. Only rows it returns get events; no row back means nothing was
-- written and the caller asks fence_row why.
WITH clock AS MATERIALIZED (
    SELECT extract(epoch FROM clock_timestamp())::float8 AS now
), fenced AS (
    UPDATE runs SET next_seq = next_seq + %(n)s::bigint, updated_at = clock.now
    FROM clock
    WHERE runs.run_id = %(run_id)s::text AND runs.lease_token = %(token)s::bigint
      AND runs.lease_owner = %(owner)s::text AND runs.state = 'running'
      AND runs.lease_expires_at >= clock.now AND runs.next_seq = %(first_seq)s::bigint
      AND (%(signal_id)s::bigint IS NULL OR EXISTS (
          SELECT 1 FROM signals s
          WHERE s.id = %(signal_id)s::bigint AND s.run_id = runs.run_id
            AND s.consumed_seq IS NULL))
    RETURNING runs.run_id, clock.now
), consumed AS (
    UPDATE signals SET consumed_seq = %(first_seq)s::bigint
    FROM fenced
    WHERE signals.id = %(signal_id)s::bigint AND signals.run_id = fenced.run_id
), appended AS (
    INSERT INTO events (run_id, seq, type, command, data, created_at)
    SELECT fenced.run_id, %(first_seq)s::bigint + e.i - 1, e.type, e.command, e.data, fenced.now
    FROM fenced,
         unnest(%(types)s::text[], %(commands)s::text[], %(datas)s::bytea[])
             WITH ORDINALITY AS e (type, command, data, i)
)
SELECT 1 FROM fenced;

-- name: suspend_run
-- Fenced like append_events; the run drops its lease and sleeps until wake_at.
-- A cancel request not yet delivered to the workflow, a buffered unconsumed
-- signal it waits for, or a task or child run it waits for that has ended,
-- makes it due at once (no lost wake-up). A sender commits its signal after locking this
-- row; if it did so after this statement's snapshot was taken (we waited for
-- the row lock), the EXISTS cannot see the signal, but the row version we
-- update is then newer than the snapshot's: that also wakes the run (at worst
-- one spurious wake-up, never a lost one).
WITH clock AS MATERIALIZED (
    SELECT extract(epoch FROM clock_timestamp())::float8 AS now
), fenced AS (
    UPDATE runs
    SET next_seq = next_seq + %(n)s::bigint, updated_at = clock.now, state = 'suspended',
        lease_owner = NULL, lease_expires_at = NULL,
        wake_at = CASE
            WHEN (runs.cancel_requested AND NOT %(cancel_delivered)s::boolean)
              OR (cardinality(%(signal_names)s::text[]) > 0 AND (
                  EXISTS (
                      SELECT 1 FROM signals s
                      WHERE s.run_id = runs.run_id AND s.consumed_seq IS NULL
                        AND s.name = ANY (%(signal_names)s::text[]))
                  OR (runs.wake_at IS NOT NULL AND runs.xmin <> (
                      SELECT seen.xmin FROM runs seen WHERE seen.run_id = runs.run_id))))
              OR (cardinality(%(task_commands)s::text[]) > 0 AND (
                  EXISTS (
                      SELECT 1 FROM tasks t
                      WHERE t.run_id = runs.run_id AND t.state IN ('completed', 'failed')
                        AND t.command = ANY (%(task_commands)s::text[]))
                  -- a task that finished after our snapshot touched this row (below)
                  OR runs.xmin <> (
                      SELECT seen.xmin FROM runs seen WHERE seen.run_id = runs.run_id)))
              OR (cardinality(%(child_ids)s::text[]) > 0 AND (
                  EXISTS (
                      SELECT 1 FROM runs c
                      WHERE c.run_id = ANY (%(child_ids)s::text[])
                        AND c.state IN ('completed', 'failed', 'cancelled', 'continued'))
                  -- a child that ended after our snapshot touched this row (finish_run)
                  OR runs.xmin <> (
                      SELECT seen.xmin FROM runs seen WHERE seen.run_id = runs.run_id)))
            THEN least(coalesce(%(wake_at)s::float8, clock.now), clock.now)
            ELSE %(wake_at)s::float8
        END
    FROM clock
    WHERE runs.run_id = %(run_id)s::text AND runs.lease_token = %(token)s::bigint
      AND runs.lease_owner = %(owner)s::text AND runs.state = 'running'
      AND runs.lease_expires_at >= clock.now AND runs.next_seq = %(first_seq)s::bigint
    RETURNING runs.run_id, clock.now
), appended AS (
    INSERT INTO events (run_id, seq, type, command, data, created_at)
    SELECT fenced.run_id, %(first_seq)s::bigint + e.i - 1, e.type, e.command, e.data, fenced.now
    FROM fenced,
         unnest(%(types)s::text[], %(commands)s::text[], %(datas)s::bytea[])
             WITH ORDINALITY AS e (type, command, data, i)
), notified AS (
    SELECT count(pg_notify(%(channel)s::text, 'suspended')) FROM fenced
)
SELECT 1 FROM fenced, notified;

-- name: finish_run
-- Fenced like append_events; the run ends, its outcome goes to run_payloads.
-- Commit before wake: its parent (even a running one, whose suspend_run then
-- sees the row changed) is made due, and the children it closes are asked to
-- cancel ('wait' children only when it was cancelled); their holders or next
-- claimers cancel them the normal way, and their own end cascades further.
WITH clock AS MATERIALIZED (
    SELECT extract(epoch FROM clock_timestamp())::float8 AS now
), fenced AS (
    UPDATE runs
    SET next_seq = next_seq + %(n)s::bigint, updated_at = clock.now, state = %(state)s::text,
        lease_owner = NULL, lease_expires_at = NULL, wake_at = NULL
    FROM clock
    WHERE runs.run_id = %(run_id)s::text AND runs.lease_token = %(token)s::bigint
      AND runs.lease_owner = %(owner)s::text AND runs.state = 'running'
      AND runs.lease_expires_at >= clock.now AND runs.next_seq = %(first_seq)s::bigint
    RETURNING runs.run_id, runs.parent_run_id, clock.now
), parent_woken AS (
    UPDATE runs
    SET wake_at = least(coalesce(runs.wake_at, fenced.now), fenced.now), updated_at = fenced.now
    FROM fenced
    WHERE runs.run_id = fenced.parent_run_id
      AND runs.state IN ('pending', 'running', 'suspended')
    RETURNING 1
), children_closed AS (
    UPDATE runs
    SET cancel_requested = true, updated_at = fenced.now,
        wake_at = least(coalesce(runs.wake_at, fenced.now), fenced.now)
    FROM fenced
    WHERE runs.parent_run_id = fenced.run_id
      AND runs.state IN ('pending', 'running', 'suspended')
      AND (runs.parent_close = 'cancel'
           OR (runs.parent_close = 'wait' AND %(state)s::text = 'cancelled'))
    RETURNING 1
), family_notified AS (
    SELECT count(pg_notify(%(channel)s::text, 'family'))
    FROM (SELECT 1 FROM parent_woken UNION ALL SELECT 1 FROM children_closed) AS woken
), outcome AS (
    UPDATE run_payloads SET result = %(result)s::bytea, error = %(error)s::bytea
    FROM fenced
    WHERE run_payloads.run_id = fenced.run_id
), appended AS (
    INSERT INTO events (run_id, seq, type, command, data, created_at)
    SELECT fenced.run_id, %(first_seq)s::bigint + e.i - 1, e.type, e.command, e.data, fenced.now
    FROM fenced,
         unnest(%(types)s::text[], %(commands)s::text[], %(datas)s::bytea[])
             WITH ORDINALITY AS e (type, command, data, i)
), tasks_dropped AS (
    -- Its queued and leased dispatched steps are discarded: nothing is left to
    -- claim, and a task worker's next heartbeat finds its lease gone and stops.
    DELETE FROM tasks USING fenced
    WHERE tasks.run_id = fenced.run_id AND tasks.state IN ('available', 'leased')
), notified AS (
    SELECT count(pg_notify(%(channel)s::text, 'finished')) FROM fenced
)
SELECT 1 FROM fenced, notified, family_notified;

-- name: fence_row
-- Read only after a fenced write matched nothing, to say why.
SELECT state, lease_owner, lease_token, lease_expires_at, next_seq,
       extract(epoch FROM clock_timestamp())::float8,
       EXISTS (
           SELECT 1 FROM signals s
           WHERE s.id = %(signal_id)s::bigint AND s.run_id = runs.run_id
             AND s.consumed_seq IS NULL)
FROM runs WHERE run_id = %(run_id)s::text;

-- name: send_signal
-- Commit before wake: the run becomes due in the statement that buffers the
-- signal. Locking the run row before the INSERT takes an id serialises the
-- senders of one run (id order is delivery order) and orders them against
-- suspend_run. A delivery id the chain has seen, or a pending cancel request,
-- writes nothing; the unique index (ON CONFLICT) catches a concurrent repeat
-- that the statement's snapshot cannot see. Returns no row if the run is not
-- live (ended, continued, unknown): the caller follows the chain.
WITH clock AS MATERIALIZED (
    SELECT extract(epoch FROM clock_timestamp())::float8 AS now
), target AS (
    SELECT run_id, coalesce(chain_id, run_id) AS chain, cancel_requested
    FROM runs
    WHERE run_id = %(run_id)s::text AND state IN ('pending', 'running', 'suspended')
    FOR UPDATE
), seen AS (
    SELECT 1 FROM signals, target
    WHERE signals.chain_id = target.chain AND signals.delivery_id = %(delivery_id)s::text
), woken AS (
    UPDATE runs
    SET wake_at = least(coalesce(wake_at, clock.now), clock.now), updated_at = clock.now
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
SELECT target.cancel_requested, EXISTS (SELECT 1 FROM seen), (SELECT id FROM inserted)
FROM target, notified;

-- name: signal_delivered
-- A signal with this delivery id was sent to the chain of run %(run_id)s already.
SELECT 1 FROM signals
WHERE delivery_id = %(delivery_id)s::text
  AND chain_id = (SELECT coalesce(chain_id, run_id) FROM runs WHERE run_id = %(run_id)s::text);

-- name: run_state
SELECT state FROM runs WHERE run_id = %(run_id)s::text;

-- name: next_signal
SELECT id, run_id, name, payload, created_at FROM signals
WHERE run_id = %(run_id)s::text AND name = %(name)s::text AND consumed_seq IS NULL
ORDER BY id LIMIT 1;

-- name: request_cancel
-- A run that journaled nothing but its start (next_seq = 1) and that no live
-- lease holds is cancelled at once: the cancelled event is journaled at its
-- next seq and an expired lease is dropped. Any other unfinished run gets
-- cancel_requested and is made due; its holder, or the next worker to claim
-- it, delivers the request to the workflow. FOR UPDATE makes the test read the
-- latest row version (a claim may commit meanwhile) and hold it until the UPDATE.
WITH clock AS MATERIALIZED (
    SELECT extract(epoch FROM clock_timestamp())::float8 AS now
), target AS (
    SELECT runs.run_id,
           NOT coalesce(runs.state = 'running' AND runs.lease_expires_at >= clock.now, false)
               AND runs.next_seq <= 1 AS at_once
    FROM runs, clock
    WHERE runs.run_id = %(run_id)s::text AND runs.state IN ('pending', 'running', 'suspended')
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
), cancelled AS (
    INSERT INTO events (run_id, seq, type, command, data, created_at)
    SELECT run_id, next_seq - 1, %(type)s::text, %(command)s::text, %(data)s::bytea, now
    FROM updated WHERE state = 'cancelled'
), parent_woken AS (
    -- cancelled at once: as finish_run, wake the parent and close the children
    UPDATE runs
    SET wake_at = least(coalesce(runs.wake_at, updated.now), updated.now),
        updated_at = updated.now
    FROM updated
    WHERE updated.state = 'cancelled' AND runs.run_id = updated.parent_run_id
      AND runs.state IN ('pending', 'running', 'suspended')
), children_closed AS (
    UPDATE runs
    SET cancel_requested = true, updated_at = updated.now,
        wake_at = least(coalesce(runs.wake_at, updated.now), updated.now)
    FROM updated
    WHERE updated.state = 'cancelled' AND runs.parent_run_id = updated.run_id
      AND runs.state IN ('pending', 'running', 'suspended')
      AND runs.parent_close IN ('cancel', 'wait')
), notified AS (
    SELECT count(pg_notify(%(channel)s::text, 'cancel')) FROM updated
)
SELECT updated.state FROM updated, notified;

-- name: start_children
-- append_events (without a signal) plus the child runs, in one statement: a
-- failed fence creates no child, and a taken run id (unique violation) fails
-- the whole statement, events included. Each child is pending and due at
-- once, with its payload row and its started event at seq 0.
WITH clock AS MATERIALIZED (
    SELECT extract(epoch FROM clock_timestamp())::float8 AS now
), fenced AS (
    UPDATE runs SET next_seq = next_seq + %(n)s::bigint, updated_at = clock.now
    FROM clock
    WHERE runs.run_id = %(run_id)s::text AND runs.lease_token = %(token)s::bigint
      AND runs.lease_owner = %(owner)s::text AND runs.state = 'running'
      AND runs.lease_expires_at >= clock.now AND runs.next_seq = %(first_seq)s::bigint
    RETURNING runs.run_id, clock.now
), appended AS (
    INSERT INTO events (run_id, seq, type, command, data, created_at)
    SELECT fenced.run_id, %(first_seq)s::bigint + e.i - 1, e.type, e.command, e.data, fenced.now
    FROM fenced,
         unnest(%(types)s::text[], %(commands)s::text[], %(datas)s::bytea[])
             WITH ORDINALITY AS e (type, command, data, i)
), child AS (
    SELECT fenced.run_id AS parent_run_id, fenced.now, c.*
    FROM fenced,
         unnest(%(child_ids)s::text[], %(workflows)s::text[], %(versions)s::text[],
                %(inputs)s::bytea[], %(parent_closes)s::text[], %(depths)s::smallint[],
                %(started_types)s::text[], %(started_datas)s::bytea[])
             AS c (run_id, workflow, version, input, parent_close, depth,
                   started_type, started_data)
), created AS (
    INSERT INTO runs (run_id, workflow, version, state, created_at, updated_at, wake_at,
                      next_seq, parent_run_id, parent_close, depth)
    SELECT run_id, workflow, version, 'pending', now, now, now, 1,
           parent_run_id, parent_close, depth
    FROM child
), payload AS (
    INSERT INTO run_payloads (run_id, input) SELECT run_id, input FROM child
), started AS (
    INSERT INTO events (run_id, seq, type, command, data, created_at)
    SELECT run_id, 0, started_type, NULL, started_data, now FROM child
), notified AS (
    SELECT count(pg_notify(%(channel)s::text, 'created')) FROM fenced
)
SELECT 1 FROM fenced, notified;

-- name: lock_run
-- continue_run's first statement: waits for (and then holds) the run row, so
-- that the switch's own statement, which takes its snapshot after this one,
-- sees every signal committed before it (and moves it), while a signal sent
-- after it waits, finds the run continued and goes to the successor.
SELECT 1 FROM runs WHERE run_id = %(run_id)s::text FOR UPDATE;

-- name: continue_run
-- Continue-as-new, fenced like finish_run, in one statement: the run ends
-- 'continued' naming its successor; the successor is created pending and due
-- (payload row, started event at seq 0), inherits the run's cancel request
-- and its unconsumed signals (same ids: delivery order holds); the children
-- the run closes ('cancel' ones) are asked to cancel. The parent is not woken:
-- the chain goes on. A taken successor id fails the whole statement.
WITH clock AS MATERIALIZED (
    SELECT extract(epoch FROM clock_timestamp())::float8 AS now
), fenced AS (
    UPDATE runs
    SET next_seq = next_seq + %(n)s::bigint, updated_at = clock.now, state = 'continued',
        continued_to = %(successor)s::text,
        lease_owner = NULL, lease_expires_at = NULL, wake_at = NULL
    FROM clock
    WHERE runs.run_id = %(run_id)s::text AND runs.lease_token = %(token)s::bigint
      AND runs.lease_owner = %(owner)s::text AND runs.state = 'running'
      AND runs.lease_expires_at >= clock.now AND runs.next_seq = %(first_seq)s::bigint
    RETURNING runs.run_id, runs.cancel_requested, clock.now
), appended AS (
    INSERT INTO events (run_id, seq, type, command, data, created_at)
    SELECT fenced.run_id, %(first_seq)s::bigint + e.i - 1, e.type, e.command, e.data, fenced.now
    FROM fenced,
         unnest(%(types)s::text[], %(commands)s::text[], %(datas)s::bytea[])
             WITH ORDINALITY AS e (type, command, data, i)
), created AS (
    INSERT INTO runs (run_id, workflow, version, state, created_at, updated_at, wake_at,
                      next_seq, cancel_requested, parent_run_id, parent_close, depth,
                      chain_id, generation)
    SELECT %(successor)s::text, %(workflow)s::text, %(version)s::text, 'pending',
           now, now, now, 1, cancel_requested, %(parent_run_id)s::text,
           %(parent_close)s::text, %(depth)s::smallint, %(chain_id)s::text,
           %(generation)s::integer
    FROM fenced
    RETURNING run_id
), payload AS (
    INSERT INTO run_payloads (run_id, input)
    SELECT %(successor)s::text, %(input)s::bytea FROM fenced
), started AS (
    INSERT INTO events (run_id, seq, type, command, data, created_at)
    SELECT %(successor)s::text, 0, %(started_type)s::text, NULL, %(started_data)s::bytea, now
    FROM fenced
), moved AS (
    UPDATE signals SET run_id = %(successor)s::text
    FROM fenced
    WHERE signals.run_id = fenced.run_id AND signals.consumed_seq IS NULL
), children_closed AS (
    UPDATE runs
    SET cancel_requested = true, updated_at = fenced.now,
        wake_at = least(coalesce(runs.wake_at, fenced.now), fenced.now)
    FROM fenced
    WHERE runs.parent_run_id = fenced.run_id
      AND runs.state IN ('pending', 'running', 'suspended')
      AND runs.parent_close = 'cancel'
), tasks_dropped AS (
    DELETE FROM tasks USING fenced  -- as in finish_run
    WHERE tasks.run_id = fenced.run_id AND tasks.state IN ('available', 'leased')
), notified AS (
    SELECT count(pg_notify(%(channel)s::text, 'created')) FROM fenced
)
SELECT 1 FROM fenced, notified;

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

-- name: get_idempotent
SELECT result FROM idempotency_keys WHERE scope = %(scope)s::text AND key = %(key)s::text;

-- name: put_idempotent
-- Returns the row only when this call stored it; the loser reads the winner's.
INSERT INTO idempotency_keys (scope, key, result, created_at)
VALUES (%(scope)s::text, %(key)s::text, %(result)s::bytea, extract(epoch FROM clock_timestamp()))
ON CONFLICT (scope, key) DO NOTHING
RETURNING result;

-- Dispatched steps. Task rows are selected in TaskRecord field order (see
-- _sql.task_record). Task fences: the task leased to the owner at the attempt,
-- its lease unexpired on the database clock; no row back means the fence
-- failed and nothing was written. Task outcomes that wake a run notify in the
-- same statement (delivered on commit).

-- name: dispatch_tasks
-- append_events (without a signal) plus the task rows, in one statement: a
-- failed fence inserts neither, and a duplicate (run_id, command) fails the
-- whole statement, events included.
WITH clock AS MATERIALIZED (
    SELECT extract(epoch FROM clock_timestamp())::float8 AS now
), fenced AS (
    UPDATE runs SET next_seq = next_seq + %(n)s::bigint, updated_at = clock.now
    FROM clock
    WHERE runs.run_id = %(run_id)s::text AND runs.lease_token = %(token)s::bigint
      AND runs.lease_owner = %(owner)s::text AND runs.state = 'running'
      AND runs.lease_expires_at >= clock.now AND runs.next_seq = %(first_seq)s::bigint
    RETURNING runs.run_id, clock.now
), appended AS (
    INSERT INTO events (run_id, seq, type, command, data, created_at)
    SELECT fenced.run_id, %(first_seq)s::bigint + e.i - 1, e.type, e.command, e.data, fenced.now
    FROM fenced,
         unnest(%(types)s::text[], %(commands)s::text[], %(datas)s::bytea[])
             WITH ORDINALITY AS e (type, command, data, i)
), dispatched AS (
    INSERT INTO tasks (run_id, command, step, queue, priority, args, attempt, max_attempts,
                       state, available_at, created_at)
    SELECT fenced.run_id, t.command, t.step, t.queue, t.priority, t.args, 1, t.max_attempts,
           'available', fenced.now, fenced.now
    FROM fenced,
         unnest(%(task_commands)s::text[], %(steps)s::text[], %(queues)s::text[],
                %(priorities)s::bigint[], %(args)s::bytea[], %(max_attempts)s::bigint[])
             WITH ORDINALITY AS t (command, step, queue, priority, args, max_attempts, i)
    ORDER BY t.i
    RETURNING task_id, command
), notified AS (
    SELECT count(pg_notify(%(channel)s::text, 'dispatched')) FROM fenced
    WHERE cardinality(%(task_commands)s::text[]) > 0
)
SELECT fenced.run_id, dispatched.task_id, dispatched.command
FROM fenced CROSS JOIN notified LEFT JOIN dispatched ON true;

-- name: sweep_tasks
-- An expired task lease consumes its attempt: available again at once at the
-- next attempt, or failed for good when none is left (error: the JSON of
-- _checks.lease_expired_error), which wakes its run. Run by claim_tasks in
-- the transaction of its claim, just before it. Rows another sweeper holds
-- are skipped. At most 500 per claim, oldest expiry first, so that a mass
-- expiry (a fleet of task workers lost) is worked off in short transactions.
-- SET expressions read the row as it was.
WITH clock AS MATERIALIZED (
    SELECT extract(epoch FROM clock_timestamp())::float8 AS now
), expired AS (
    SELECT tasks.task_id FROM tasks, clock
    WHERE tasks.state = 'leased' AND tasks.lease_expires_at < clock.now
    ORDER BY tasks.lease_expires_at
    LIMIT 500
    FOR UPDATE OF tasks SKIP LOCKED
), swept AS (
    UPDATE tasks
    SET state = CASE WHEN attempt >= max_attempts THEN 'failed' ELSE 'available' END,
        available_at = CASE WHEN attempt >= max_attempts THEN available_at ELSE clock.now END,
        attempt = CASE WHEN attempt >= max_attempts THEN attempt ELSE attempt + 1 END,
        error = convert_to(jsonb_build_object(
            'type', 'keel.errors.StepTimeoutError',
            'message', 'task lease expired on attempt ' || attempt
                       || CASE WHEN attempt >= max_attempts
                               THEN ' and no attempts are left' ELSE '' END,
            'traceback', '')::text, 'UTF8'),
        lease_owner = NULL, lease_expires_at = NULL
    FROM expired, clock
    WHERE tasks.task_id = expired.task_id
    RETURNING tasks.run_id, tasks.state
), woken AS (
    UPDATE runs
    SET wake_at = least(coalesce(runs.wake_at, clock.now), clock.now), updated_at = clock.now
    FROM clock
    WHERE runs.run_id IN (SELECT run_id FROM swept WHERE state = 'failed')
      -- a running row too: its holder's suspend_run then sees the row changed
      AND runs.state IN ('pending', 'running', 'suspended')
), notified AS (
    SELECT count(pg_notify(%(channel)s::text, 'task'))
    FROM (SELECT 1 FROM swept LIMIT 1) AS any_swept
)
SELECT count(*) FROM swept, notified;

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
WITH clock AS MATERIALIZED (
    SELECT extract(epoch FROM clock_timestamp())::float8 AS now
), room AS MATERIALIZED (
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
    RETURNING tasks.task_id, tasks.run_id, tasks.command, tasks.step, tasks.queue,
              tasks.priority, tasks.args, tasks.attempt, tasks.max_attempts, tasks.state,
              tasks.available_at, tasks.lease_owner, tasks.lease_expires_at, tasks.result,
              tasks.error, tasks.created_at
)
SELECT clock.now, c.*
FROM clock LEFT JOIN claimed c ON true
ORDER BY c.priority DESC, c.available_at, c.task_id;

-- name: set_queue_limit
-- Notify: a raised limit lets waiting claimers take more at once.
WITH upserted AS (
    INSERT INTO queues (queue, concurrency) VALUES (%(queue)s::text, %(concurrency)s::integer)
    ON CONFLICT (queue) DO UPDATE SET concurrency = excluded.concurrency
    RETURNING queue
)
SELECT pg_notify(%(channel)s::text, 'task') FROM upserted;

-- name: clear_queue_limit
WITH deleted AS (
    DELETE FROM queues WHERE queue = %(queue)s::text RETURNING queue
)
SELECT pg_notify(%(channel)s::text, 'task') FROM deleted;

-- name: list_queues
-- Queues with a limit or with open tasks; the counts walk the partial indexes.
WITH open AS (
    SELECT queue,
           count(*) FILTER (WHERE state = 'available') AS available,
           count(*) FILTER (WHERE state = 'leased') AS leased
    FROM tasks WHERE state IN ('available', 'leased')
    GROUP BY queue
)
SELECT coalesce(q.queue, o.queue), q.concurrency,
       coalesce(o.available, 0), coalesce(o.leased, 0)
FROM queues q FULL JOIN open o ON o.queue = q.queue
ORDER BY 1;

-- name: renew_task_leases
-- An expired task lease cannot be renewed: its attempt may already be consumed.
WITH clock AS MATERIALIZED (
    SELECT extract(epoch FROM clock_timestamp())::float8 AS now
), renewed AS (
    UPDATE tasks SET lease_expires_at = clock.now + %(ttl)s::float8
    FROM clock, unnest(%(task_ids)s::bigint[], %(attempts)s::bigint[]) AS held (task_id, attempt)
    WHERE tasks.task_id = held.task_id AND tasks.attempt = held.attempt
      AND tasks.lease_owner = %(owner)s::text AND tasks.state = 'leased'
      AND tasks.lease_expires_at >= clock.now
    RETURNING tasks.task_id
)
SELECT clock.now, array(SELECT task_id FROM renewed) FROM clock;

-- name: complete_task
-- Commit before wake: a waiting run is due in the statement storing the result.
WITH clock AS MATERIALIZED (
    SELECT extract(epoch FROM clock_timestamp())::float8 AS now
), done AS (
    UPDATE tasks
    SET state = 'completed', result = %(result)s::bytea,
        lease_owner = NULL, lease_expires_at = NULL
    FROM clock
    WHERE tasks.task_id = %(task_id)s::bigint AND tasks.lease_owner = %(owner)s::text
      AND tasks.attempt = %(attempt)s::bigint AND tasks.state = 'leased'
      AND tasks.lease_expires_at >= clock.now
    RETURNING tasks.run_id
), woken AS (
    UPDATE runs
    SET wake_at = least(coalesce(runs.wake_at, clock.now), clock.now), updated_at = clock.now
    FROM done, clock
    -- a running row too: its holder's suspend_run then sees the row changed
    WHERE runs.run_id = done.run_id AND runs.state IN ('pending', 'running', 'suspended')
), notified AS (
    SELECT count(pg_notify(%(channel)s::text, 'task')) FROM done
)
SELECT 1 FROM done, notified;

-- name: fail_task
-- With retry_at and an attempt left: available again from retry_at at the next
-- attempt. Otherwise failed for good, and a waiting run is due at once.
WITH clock AS MATERIALIZED (
    SELECT extract(epoch FROM clock_timestamp())::float8 AS now
), failed AS (
    UPDATE tasks
    SET state = CASE WHEN %(retry_at)s::float8 IS NOT NULL AND attempt < max_attempts
                     THEN 'available' ELSE 'failed' END,
        available_at = CASE WHEN %(retry_at)s::float8 IS NOT NULL AND attempt < max_attempts
                            THEN %(retry_at)s::float8 ELSE available_at END,
        attempt = CASE WHEN %(retry_at)s::float8 IS NOT NULL AND attempt < max_attempts
                       THEN attempt + 1 ELSE attempt END,
        error = %(error)s::bytea, lease_owner = NULL, lease_expires_at = NULL
    FROM clock
    WHERE tasks.task_id = %(task_id)s::bigint AND tasks.lease_owner = %(owner)s::text
      AND tasks.attempt = %(attempt)s::bigint AND tasks.state = 'leased'
      AND tasks.lease_expires_at >= clock.now
    RETURNING tasks.run_id, tasks.state
), woken AS (
    UPDATE runs
    SET wake_at = least(coalesce(runs.wake_at, clock.now), clock.now), updated_at = clock.now
    FROM failed, clock
    WHERE runs.run_id = failed.run_id AND failed.state = 'failed'
      AND runs.state IN ('pending', 'running', 'suspended')  -- running: see complete_task
), notified AS (
    SELECT count(pg_notify(%(channel)s::text, 'task')) FROM failed
)
SELECT 1 FROM failed, notified;

-- name: task_fence_row
-- Read only after a fenced task write matched nothing, to say why.
SELECT run_id, state, lease_owner, attempt, lease_expires_at,
       extract(epoch FROM clock_timestamp())::float8
FROM tasks WHERE task_id = %(task_id)s::bigint;

-- name: get_task
SELECT task_id, run_id, command, step, queue, priority, args, attempt, max_attempts, state,
       available_at, lease_owner, lease_expires_at, result, error, created_at
FROM tasks WHERE run_id = %(run_id)s::text AND command = %(command)s::text;

-- Schedules. Rows are selected in ScheduleRecord field order (see
-- _sql.schedule_record). Creating or resuming one notifies 'schedule', so
-- schedule loops sleeping until a later tick look again.

-- name: create_schedule
-- A row comes back only when this call inserted the schedule.
WITH clock AS MATERIALIZED (
    SELECT extract(epoch FROM clock_timestamp())::float8 AS now
), inserted AS (
    INSERT INTO schedules (schedule_id, workflow, input, cron, at, timezone, next_fire_at,
                           overlap, catchup_window, created_at, updated_at)
    SELECT %(schedule_id)s::text, %(workflow)s::text, %(input)s::bytea, %(cron)s::text,
           %(at)s::float8, %(timezone)s::text, %(next_fire_at)s::float8, %(overlap)s::text,
           %(catchup_window)s::float8, clock.now, clock.now
    FROM clock
    ON CONFLICT (schedule_id) DO NOTHING
    RETURNING schedule_id, workflow, input, cron, at, timezone, next_fire_at, paused, overlap,
              catchup_window, last_fire_at, last_run_id, created_at, updated_at
), notified AS (
    SELECT count(pg_notify(%(channel)s::text, 'schedule')) FROM inserted
)
SELECT inserted.* FROM inserted, notified;

-- name: get_schedule
SELECT schedule_id, workflow, input, cron, at, timezone, next_fire_at, paused, overlap,
       catchup_window, last_fire_at, last_run_id, created_at, updated_at
FROM schedules WHERE schedule_id = %(schedule_id)s::text;

-- name: list_schedules
SELECT schedule_id, workflow, input, cron, at, timezone, next_fire_at, paused, overlap,
       catchup_window, last_fire_at, last_run_id, created_at, updated_at
FROM schedules
WHERE %(workflow)s::text IS NULL OR workflow = %(workflow)s::text
ORDER BY schedule_id;

-- name: pause_schedule
-- The schedule as it is afterwards: the updated row, or (already paused) the
-- row as it was; nothing when it does not exist.
WITH clock AS MATERIALIZED (
    SELECT extract(epoch FROM clock_timestamp())::float8 AS now
), changed AS (
    UPDATE schedules SET paused = true, updated_at = clock.now
    FROM clock
    WHERE schedule_id = %(schedule_id)s::text AND NOT paused
    RETURNING schedule_id, workflow, input, cron, at, timezone, next_fire_at, paused, overlap,
              catchup_window, last_fire_at, last_run_id, created_at, updated_at
)
SELECT * FROM changed
UNION ALL
SELECT schedule_id, workflow, input, cron, at, timezone, next_fire_at, paused, overlap,
       catchup_window, last_fire_at, last_run_id, created_at, updated_at
FROM schedules
WHERE schedule_id = %(schedule_id)s::text AND NOT EXISTS (SELECT FROM changed);

-- name: resume_schedule
-- As pause_schedule. Only a paused schedule changes: resuming an active one
-- must not move its next tick.
WITH clock AS MATERIALIZED (
    SELECT extract(epoch FROM clock_timestamp())::float8 AS now
), changed AS (
    UPDATE schedules SET paused = false, next_fire_at = %(next_fire_at)s::float8,
                         updated_at = clock.now
    FROM clock
    WHERE schedule_id = %(schedule_id)s::text AND paused
    RETURNING schedule_id, workflow, input, cron, at, timezone, next_fire_at, paused, overlap,
              catchup_window, last_fire_at, last_run_id, created_at, updated_at
), notified AS (
    SELECT count(pg_notify(%(channel)s::text, 'schedule')) FROM changed
)
SELECT changed.* FROM changed, notified
UNION ALL
SELECT schedule_id, workflow, input, cron, at, timezone, next_fire_at, paused, overlap,
       catchup_window, last_fire_at, last_run_id, created_at, updated_at
FROM schedules
WHERE schedule_id = %(schedule_id)s::text AND NOT EXISTS (SELECT FROM changed);

-- name: delete_schedule
DELETE FROM schedules WHERE schedule_id = %(schedule_id)s::text RETURNING schedule_id;

-- name: due_schedules
-- The database clock, the earliest next fire time of the caller's workflows'
-- active schedules, then the due ones (schedules_due, earliest first). Exactly
-- one row (schedule columns NULL) when none is due.
WITH clock AS MATERIALIZED (
    SELECT extract(epoch FROM clock_timestamp())::float8 AS now
), due AS (
    SELECT s.schedule_id, s.workflow, s.input, s.cron, s.at, s.timezone, s.next_fire_at,
           s.paused, s.overlap, s.catchup_window, s.last_fire_at, s.last_run_id,
           s.created_at, s.updated_at
    FROM schedules s, clock
    WHERE NOT s.paused AND s.next_fire_at <= clock.now
      AND s.workflow = ANY (%(workflows)s::text[])
    ORDER BY s.next_fire_at, s.schedule_id
    LIMIT %(limit)s::bigint
)
SELECT clock.now,
       (SELECT min(next_fire_at) FROM schedules
        WHERE NOT paused AND workflow = ANY (%(workflows)s::text[])),
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
WITH clock AS MATERIALIZED (
    SELECT extract(epoch FROM clock_timestamp())::float8 AS now
), fired AS (
    UPDATE schedules
    SET next_fire_at = %(next_fire_at)s::float8,
        last_fire_at = coalesce(%(fired_tick)s::float8, last_fire_at),
        last_run_id = coalesce(%(run_id)s::text, last_run_id),
        updated_at = clock.now
    FROM clock
    WHERE schedule_id = %(schedule_id)s::text AND NOT paused
      AND next_fire_at = %(expected)s::float8 AND %(tick)s::float8 <= clock.now
    RETURNING schedule_id
), inserted AS (
    INSERT INTO runs (run_id, workflow, version, state, created_at, updated_at, wake_at,
                      next_seq)
    SELECT %(run_id)s::text, %(workflow)s::text, %(version)s::text, 'pending',
           clock.now, clock.now, clock.now, 1
    FROM fired, clock
    WHERE %(run_id)s::text IS NOT NULL
    ON CONFLICT (run_id) DO NOTHING
    RETURNING run_id, created_at
), payload AS (
    INSERT INTO run_payloads (run_id, input)
    SELECT run_id, %(input)s::bytea FROM inserted
), started AS (
    INSERT INTO events (run_id, seq, type, command, data, created_at)
    SELECT run_id, 0, %(type)s::text, %(command)s::text, %(data)s::bytea, created_at
    FROM inserted
), notified AS (
    SELECT count(pg_notify(%(channel)s::text, 'created')) FROM inserted
)
SELECT fired.schedule_id FROM fired, notified;

-- name: save_snapshot
-- Fenced like append_events, without touching the runs row (it stays HOT):
-- FOR SHARE holds the lease check until the commit. The run's latest
-- snapshot is replaced in place; no row back means the fence failed.
WITH clock AS MATERIALIZED (
    SELECT extract(epoch FROM clock_timestamp())::float8 AS now
), fenced AS (
    SELECT runs.run_id, runs.next_seq, clock.now
    FROM runs, clock
    WHERE runs.run_id = %(run_id)s::text AND runs.lease_token = %(token)s::bigint
      AND runs.lease_owner = %(owner)s::text AND runs.state = 'running'
      AND runs.lease_expires_at >= clock.now
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

-- name: register_worker
-- Run on the worker's liveness connection once it holds its advisory lock:
-- from now on a missing lock means a dead worker (see liveness.py).
INSERT INTO worker_locks (owner, lock_key, started_at)
VALUES (%(owner)s::text, %(lock_key)s::bigint, extract(epoch FROM clock_timestamp())::float8)
ON CONFLICT (owner) DO UPDATE SET lock_key = EXCLUDED.lock_key;

-- name: worker_registered
SELECT EXISTS (SELECT 1 FROM worker_locks WHERE owner = %(owner)s::text);

-- name: unregister_worker
DELETE FROM worker_locks WHERE owner = %(owner)s::text;

-- name: expire_dead_owners
-- Registered workers whose advisory lock no session holds are dead: their
-- leases expire now (the next claim takes each under a larger token, so
-- fencing is exactly as after a TTL expiry) and they are unregistered. A
-- worker registers only after taking its lock, so a registered owner seen
-- without one has lost its session.
WITH clock AS MATERIALIZED (
    SELECT extract(epoch FROM clock_timestamp())::float8 AS now
), held AS MATERIALIZED (
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
), forgotten AS (
    DELETE FROM worker_locks WHERE owner IN (SELECT owner FROM dead)
    RETURNING owner
), notified AS (
    SELECT count(pg_notify(%(channel)s::text, 'expired'))
    FROM (SELECT 1 FROM expired LIMIT 1) AS any_expired
)
SELECT (SELECT count(*) FROM expired), (SELECT array_agg(owner) FROM forgotten)
FROM notified;

-- name: register_versions
-- A worker's pairs, upserted (first_seen kept from its first registration),
-- and the rows of workers not seen for a while deleted, in one statement.
WITH clock AS MATERIALIZED (
    SELECT extract(epoch FROM clock_timestamp())::float8 AS now
), pruned AS (
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
