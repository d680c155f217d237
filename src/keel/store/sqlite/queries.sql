-- Named queries of the SQLite store, loaded by keel.store.sqlite._sql.
-- Each starts at a "-- name: <name>" line; {name} in a query is that named
-- fragment. Rows are read by column name: a record's fields are its table's
-- columns (see _rows.Reader).

-- Runs and their journals (runs.py) -----------------------------------------------------

-- name: insert_run
-- The row of base.created_record (every column); nothing if run_id exists.
INSERT INTO runs (run_id, workflow, version, state, input, result, error, created_at,
                  updated_at, wake_at, lease_owner, lease_token, lease_expires_at,
                  cancel_requested, next_seq, parent_run_id, parent_close, depth, chain_id,
                  generation, continued_to, forked_from, fork_seq)
VALUES (:run_id, :workflow, :version, :state, :input, :result, :error, :created_at,
        :updated_at, :wake_at, :lease_owner, :lease_token, :lease_expires_at,
        :cancel_requested, :next_seq, :parent_run_id, :parent_close, :depth, :chain_id,
        :generation, :continued_to, :forked_from, :fork_seq)
ON CONFLICT (run_id) DO NOTHING;

-- name: insert_event
INSERT INTO events (run_id, seq, type, command, data, created_at) VALUES (?, ?, ?, ?, ?, ?);

-- name: claim_candidates
-- Due runs and runs whose lease expired, each branch walking its partial index,
-- of the claimer's (workflow, version) pairs only (:versions, a JSON array of
-- pairs; NULL takes every run). runs_due carries the pair, so due runs of
-- other versions are skipped in the index.
SELECT run_id, due FROM (
    SELECT run_id, wake_at AS due FROM runs
    WHERE state IN ('pending', 'suspended') AND wake_at <= :now
      AND (:versions IS NULL OR (workflow, version) IN (
          SELECT value ->> 0, value ->> 1 FROM json_each(:versions)))
    ORDER BY wake_at LIMIT :limit)
UNION ALL
SELECT run_id, due FROM (
    SELECT run_id, lease_expires_at AS due FROM runs
    WHERE state = 'running' AND lease_expires_at < :now
      AND (:versions IS NULL OR (workflow, version) IN (
          SELECT value ->> 0, value ->> 1 FROM json_each(:versions)))
    ORDER BY lease_expires_at LIMIT :limit)
ORDER BY due, run_id
LIMIT :limit;

-- name: claim_run
-- Every claim increments the fencing token; wake_at is meaningless while running.
UPDATE runs
SET state = 'running', lease_owner = :owner, lease_token = lease_token + 1,
    lease_expires_at = :expires_at, wake_at = NULL, updated_at = :now
WHERE run_id = :run_id
RETURNING *;

-- name: renew_lease
-- An expired lease cannot be renewed: another worker may already have claimed the run.
UPDATE runs SET lease_expires_at = :expires_at
WHERE run_id = :run_id AND lease_token = :token AND lease_owner = :owner
  AND state = 'running' AND lease_expires_at >= :now
RETURNING cancel_requested;

-- name: fenced_append
-- The fence of every write made under a lease, first in its transaction: the
-- lease and the seq check in one statement, which also takes the turn's seqs.
-- Zero rows means one of them failed (run_head then says which).
UPDATE runs SET next_seq = next_seq + :n, updated_at = :now
WHERE run_id = :run_id AND lease_token = :token AND lease_owner = :owner
  AND state = 'running' AND lease_expires_at >= :now AND next_seq = :first_seq;

-- name: run_head
-- The small columns of a run: why a fence failed, a cancel, a chain's next run.
SELECT run_id, state, lease_owner, lease_token, lease_expires_at, next_seq, continued_to
FROM runs WHERE run_id = ?;

-- name: consume_signal
UPDATE signals SET consumed_seq = :seq
WHERE id = :id AND run_id = :run_id AND consumed_seq IS NULL;

-- name: suspend
-- After the fence, the turn's other parts: a buffered signal the run waits
-- for, a task or a child run it waits for that already finished, or a cancel
-- request not yet delivered to the workflow, makes it due at once.
UPDATE runs
SET state = 'suspended', lease_owner = NULL, lease_expires_at = NULL,
    wake_at = CASE
        WHEN (cancel_requested AND NOT :cancel_delivered) OR EXISTS (
            SELECT 1 FROM signals s
            WHERE s.run_id = runs.run_id AND s.consumed_seq IS NULL
              AND s.name IN (SELECT value FROM json_each(:signal_names)))
          OR EXISTS (
            SELECT 1 FROM tasks t
            WHERE t.run_id = runs.run_id AND t.state IN ('completed', 'failed')
              AND t.command IN (SELECT value FROM json_each(:task_commands)))
          OR EXISTS (
            SELECT 1 FROM runs c
            WHERE c.run_id IN (SELECT value FROM json_each(:child_ids))
              AND c.state IN ('completed', 'failed', 'cancelled', 'continued', 'terminated'))
        THEN min(coalesce(:wake_at, :now), :now)
        ELSE :wake_at
    END
WHERE run_id = :run_id;

-- name: end_run
-- After the fence: the run ends in :state (a finish), or 'continued' with its
-- successor (inserted with insert_run in the same transaction).
UPDATE runs
SET state = :state, result = :result, error = :error, continued_to = :successor,
    lease_owner = NULL, lease_expires_at = NULL, wake_at = NULL
WHERE run_id = :run_id;

-- name: drop_open_tasks
-- A run ended: its queued and leased dispatched steps are discarded, so there is
-- nothing left to claim and a task worker's next heartbeat finds its lease gone.
DELETE FROM tasks WHERE run_id = :run_id AND state IN ('available', 'leased');

-- name: wake_parent
-- Commit before wake: a child that ends makes its parent due in the same
-- transaction (a running parent too: its suspend re-checks its children).
UPDATE runs SET wake_at = min(coalesce(wake_at, :now), :now), updated_at = :now
WHERE run_id = (SELECT parent_run_id FROM runs WHERE run_id = :run_id)
  AND state IN ('pending', 'running', 'suspended');

-- name: cancel_children
-- A run that ended (in :state) asks the children it closes to cancel: their
-- holders (or next claimers) cancel them the normal way, and their own end
-- cascades further. 'wait' children are cancelled only with a cancelled (or
-- terminated) parent.
UPDATE runs
SET cancel_requested = 1, wake_at = min(coalesce(wake_at, :now), :now), updated_at = :now
WHERE parent_run_id = :run_id AND state IN ('pending', 'running', 'suspended')
  AND (parent_close = 'cancel'
       OR (parent_close = 'wait' AND :state IN ('cancelled', 'terminated')));

-- name: successor_takes_over
-- The successor inherits a cancel request the run had not handled, and its
-- unconsumed signals (their ids, hence their delivery order, stay).
UPDATE runs
SET cancel_requested = (SELECT cancel_requested FROM runs WHERE run_id = :run_id)
WHERE run_id = :successor;

-- name: move_signals
UPDATE signals SET run_id = :successor WHERE run_id = :run_id AND consumed_seq IS NULL;

-- name: cancel_now
UPDATE runs
SET state = 'cancelled', next_seq = next_seq + 1, cancel_requested = 1, wake_at = NULL,
    lease_owner = NULL, lease_expires_at = NULL, updated_at = :now
WHERE run_id = :run_id;

-- name: cancel_request
UPDATE runs
SET cancel_requested = 1, wake_at = min(coalesce(wake_at, :now), :now), updated_at = :now
WHERE run_id = :run_id;

-- name: save_snapshot
-- The latest per run, replaced in place (after the fence check, in the same transaction).
INSERT INTO snapshots (run_id, upto_seq, version, format, data, created_at)
VALUES (:run_id, :upto_seq, :version, :format, :data, :now)
ON CONFLICT (run_id) DO UPDATE SET
    upto_seq = excluded.upto_seq, version = excluded.version, format = excluded.format,
    data = excluded.data, created_at = excluded.created_at;

-- name: load_snapshot
SELECT * FROM snapshots WHERE run_id = ?;

-- Operator actions (admin.py) ---------------------------------------------------------

-- name: terminate_run
-- After its run_terminated event: ended at once, the lease cleared and the token
-- bumped (a holder's next write fails its fence), no wake-up left.
UPDATE runs
SET state = 'terminated', next_seq = next_seq + 1, lease_owner = NULL,
    lease_expires_at = NULL, lease_token = lease_token + 1, wake_at = NULL, updated_at = :now
WHERE run_id = :run_id;

-- name: cancel_delivered
-- Whether a cancel request reached the workflow (it was journaled).
SELECT EXISTS (SELECT 1 FROM events WHERE run_id = ? AND type = 'cancel_requested') AS found;

-- name: resume_run
-- Due now, an undelivered cancel request withdrawn; a running run loses its
-- lease (suspended, token bumped: the holder's next write fails its fence).
UPDATE runs
SET state = CASE WHEN state = 'running' THEN 'suspended' ELSE state END,
    lease_token = lease_token + (state = 'running'),
    lease_owner = NULL, lease_expires_at = NULL, wake_at = :now, cancel_requested = 0,
    updated_at = :now
WHERE run_id = :run_id;

-- name: set_next_seq
UPDATE runs SET next_seq = :next_seq WHERE run_id = :run_id;

-- name: redeliver_signals
-- A fork gets again, oldest first, the signals its original had not consumed
-- below the fork point (a fork is a chain of its own: its delivery ids too).
INSERT INTO signals (run_id, name, payload, created_at, delivery_id, chain_id)
SELECT :run_id, name, payload, created_at, delivery_id,
       CASE WHEN delivery_id IS NOT NULL THEN :run_id END
FROM signals
WHERE run_id = :source AND (consumed_seq IS NULL OR consumed_seq >= :fork_seq)
ORDER BY id;

-- name: forks
SELECT * FROM runs WHERE forked_from = ? ORDER BY created_at, run_id;

-- name: prunable
-- A fragment: runs prune may delete, a continue-as-new chain whole. Every run
-- of r's chain (r too) has ended, before :before; the chain ended in one of
-- :states (a JSON array; its `continued` runs go with how its last run ended);
-- no run of it has a live parent or a live child. runs_ended orders them; a
-- chain's earlier runs ended first, so a batch cut never strands them.
SELECT r.run_id FROM runs r
WHERE r.state IN ('completed', 'failed', 'cancelled', 'continued', 'terminated')
  AND r.updated_at < :before
  AND NOT EXISTS (
      SELECT 1 FROM runs m
      WHERE (m.run_id = coalesce(r.chain_id, r.run_id)
             OR m.chain_id = coalesce(r.chain_id, r.run_id))
        AND (m.state IN ('pending', 'running', 'suspended') OR m.updated_at >= :before
             OR (m.state <> 'continued'
                 AND m.state NOT IN (SELECT value FROM json_each(:states)))
             OR EXISTS (
                 SELECT 1 FROM runs p
                 WHERE p.run_id = m.parent_run_id
                   AND p.state IN ('pending', 'running', 'suspended'))
             OR EXISTS (
                 SELECT 1 FROM runs c
                 WHERE c.parent_run_id = m.run_id
                   AND c.state IN ('pending', 'running', 'suspended'))))
ORDER BY r.updated_at, r.run_id

-- name: count_prunable
SELECT count(*) AS n FROM {prunable};

-- name: prune_runs
-- The journal, signals, tasks and snapshot go with each run (ON DELETE CASCADE).
DELETE FROM runs WHERE run_id IN (SELECT run_id FROM {prunable} LIMIT :limit);

-- Signals (mailbox.py) ------------------------------------------------------------------

-- name: wake_for_signal
-- Commit before wake: the run becomes due in the same transaction as the signal.
-- A run with a pending cancel request takes no signal (the caller raises).
UPDATE runs SET wake_at = min(coalesce(wake_at, :now), :now), updated_at = :now
WHERE run_id = :run_id AND state IN ('pending', 'running', 'suspended')
  AND NOT cancel_requested;

-- name: signal_delivered
-- A signal with this delivery id was sent to the chain of run :run_id already.
SELECT 1 FROM signals
WHERE delivery_id = :delivery_id
  AND chain_id = (SELECT coalesce(chain_id, run_id) FROM runs WHERE run_id = :run_id);

-- name: insert_signal
INSERT INTO signals (run_id, name, payload, created_at, delivery_id, chain_id)
VALUES (:run_id, :name, :payload, :now, :delivery_id,
        CASE WHEN :delivery_id IS NOT NULL
             THEN (SELECT coalesce(chain_id, run_id) FROM runs WHERE run_id = :run_id) END);

-- name: next_signal
SELECT * FROM signals
WHERE run_id = ? AND name = ? AND consumed_seq IS NULL
ORDER BY id LIMIT 1;

-- Dispatched steps (tasks.py). Task fences: the task leased to the owner at
-- the attempt, its lease unexpired; zero rows means the fence failed.

-- name: insert_task
INSERT INTO tasks (run_id, command, step, queue, priority, args, attempt, max_attempts, state,
                   available_at, created_at)
VALUES (:run_id, :command, :step, :queue, :priority, :args, 1, :max_attempts, 'available',
        :now, :now)
RETURNING task_id;

-- name: get_task
SELECT * FROM tasks WHERE run_id = ? AND command = ?;

-- name: task_candidates
-- Read first, on the reader: whether a claim has anything to do at all (a
-- queue at its limit has nothing to claim).
SELECT EXISTS (SELECT 1 FROM tasks WHERE state = 'leased' AND lease_expires_at < :now)
    OR EXISTS (SELECT 1 FROM tasks
               WHERE state = 'available' AND available_at <= :now
                 AND queue IN (SELECT value FROM json_each(:queues))
                 AND queue NOT IN (
                     SELECT q.queue FROM queues q
                     WHERE q.concurrency <= (SELECT count(*) FROM tasks l
                                             WHERE l.queue = q.queue AND l.state = 'leased')))
    AS found;

-- name: sweep_tasks
-- An expired task lease consumes its attempt: available again at once at the
-- next attempt, or failed for good when none is left. The error is the JSON of
-- _checks.lease_expired_error. At most 500 per claim, oldest expiry first, so
-- that a mass expiry is worked off in short write transactions. SET
-- expressions read the row as it was.
UPDATE tasks
SET state = CASE WHEN attempt >= max_attempts THEN 'failed' ELSE 'available' END,
    available_at = CASE WHEN attempt >= max_attempts THEN available_at ELSE :now END,
    attempt = CASE WHEN attempt >= max_attempts THEN attempt ELSE attempt + 1 END,
    error = CAST(json_object(
        'type', 'keel.errors.StepTimeoutError',
        'message', 'task lease expired on attempt ' || attempt
                   || CASE WHEN attempt >= max_attempts
                           THEN ' and no attempts are left' ELSE '' END,
        'traceback', '') AS BLOB),
    lease_owner = NULL, lease_expires_at = NULL
WHERE task_id IN (SELECT task_id FROM tasks
                  WHERE state = 'leased' AND lease_expires_at < :now
                  ORDER BY lease_expires_at
                  LIMIT 500)
RETURNING run_id, state;

-- name: wake_for_task
-- Commit before wake: a task outcome makes its waiting run due in the same transaction.
UPDATE runs SET wake_at = min(coalesce(wake_at, :now), :now), updated_at = :now
WHERE run_id = :run_id AND state IN ('pending', 'suspended');

-- name: claim_tasks
-- Due tasks in claim order, at most :limit, and for a queue with a limit at
-- most its room (limit minus its leased tasks; the write lock of this
-- transaction keeps the count true). A queue with no room is left out before
-- the LIMIT so that it cannot crowd out the others. RETURNING order is
-- unspecified: the caller sorts the rows in claim order.
WITH room AS (
    SELECT q.queue,
           q.concurrency - (SELECT count(*) FROM tasks l
                            WHERE l.queue = q.queue AND l.state = 'leased') AS free
    FROM queues q
    WHERE q.queue IN (SELECT value FROM json_each(:queues))
), due AS (
    SELECT task_id, queue, priority, available_at FROM tasks
    WHERE state = 'available' AND available_at <= :now
      AND queue IN (SELECT value FROM json_each(:queues))
      AND queue NOT IN (SELECT queue FROM room WHERE free <= 0)
    ORDER BY priority DESC, available_at, task_id
    LIMIT :limit
), ranked AS (
    SELECT due.task_id, room.free,
           row_number() OVER (PARTITION BY due.queue
                              ORDER BY due.priority DESC, due.available_at, due.task_id) AS n
    FROM due LEFT JOIN room ON room.queue = due.queue
)
UPDATE tasks SET state = 'leased', lease_owner = :owner, lease_expires_at = :expires_at
WHERE task_id IN (SELECT task_id FROM ranked WHERE free IS NULL OR n <= free)
RETURNING *;

-- name: set_queue_limit
INSERT INTO queues (queue, concurrency) VALUES (:queue, :concurrency)
ON CONFLICT (queue) DO UPDATE SET concurrency = excluded.concurrency;

-- name: clear_queue_limit
DELETE FROM queues WHERE queue = :queue;

-- name: list_queues
-- Queues with a limit or with open tasks; the counts walk the partial indexes.
WITH open AS (
    SELECT queue,
           sum(state = 'available') AS available,
           sum(state = 'leased') AS leased
    FROM tasks WHERE state IN ('available', 'leased')
    GROUP BY queue
)
SELECT q.queue AS queue, q.concurrency AS concurrency,
       coalesce(o.available, 0) AS available, coalesce(o.leased, 0) AS leased
FROM queues q LEFT JOIN open o ON o.queue = q.queue
UNION ALL
SELECT o.queue, NULL, o.available, o.leased
FROM open o WHERE o.queue NOT IN (SELECT queue FROM queues)
ORDER BY queue;

-- name: renew_task_lease
UPDATE tasks SET lease_expires_at = :expires_at
WHERE task_id = :task_id AND lease_owner = :owner AND attempt = :attempt
  AND state = 'leased' AND lease_expires_at >= :now
RETURNING task_id;

-- name: complete_task
UPDATE tasks SET state = 'completed', result = :result, lease_owner = NULL, lease_expires_at = NULL
WHERE task_id = :task_id AND lease_owner = :owner AND attempt = :attempt
  AND state = 'leased' AND lease_expires_at >= :now
RETURNING run_id, state;

-- name: fail_task
-- With retry_at and an attempt left: available again from retry_at at the
-- next attempt; otherwise failed for good. SET expressions read the row as it was.
UPDATE tasks
SET state = CASE WHEN :retry_at IS NOT NULL AND attempt < max_attempts
                 THEN 'available' ELSE 'failed' END,
    available_at = CASE WHEN :retry_at IS NOT NULL AND attempt < max_attempts
                        THEN :retry_at ELSE available_at END,
    attempt = CASE WHEN :retry_at IS NOT NULL AND attempt < max_attempts
                   THEN attempt + 1 ELSE attempt END,
    error = :error, lease_owner = NULL, lease_expires_at = NULL
WHERE task_id = :task_id AND lease_owner = :owner AND attempt = :attempt
  AND state = 'leased' AND lease_expires_at >= :now
RETURNING run_id, state;

-- name: task_fence_row
-- Read only after a fenced task write matched nothing, to say why.
SELECT run_id, state, lease_owner, attempt, lease_expires_at FROM tasks WHERE task_id = ?;

-- Idempotency keys (keys.py) ------------------------------------------------------------

-- name: get_idempotent
-- An entry stored before :oldest (now less the caller's max_age) counts as missing.
SELECT result FROM idempotency_keys
WHERE scope = :scope AND key = :key AND (:oldest IS NULL OR created_at >= :oldest);

-- name: put_idempotent
-- Keeps the first committed result, unless it was stored before :oldest: then
-- this one replaces it, in the same write. The caller then reads what is stored.
INSERT INTO idempotency_keys (scope, key, result, created_at)
VALUES (:scope, :key, :result, :now)
ON CONFLICT (scope, key) DO UPDATE SET result = excluded.result, created_at = excluded.created_at
WHERE :oldest IS NOT NULL AND idempotency_keys.created_at < :oldest;

-- Graph specs (specs.py) ----------------------------------------------------------------

-- name: save_spec
-- Keeps the first spec; the caller then reads what is stored and compares.
INSERT INTO graph_specs (workflow, version, spec, created_at) VALUES (?, ?, ?, ?)
ON CONFLICT (workflow, version) DO NOTHING;

-- name: load_spec
SELECT spec FROM graph_specs WHERE workflow = ? AND version = ?;

-- name: list_specs
SELECT workflow, version FROM graph_specs
WHERE :workflow IS NULL OR workflow = :workflow
ORDER BY workflow, version;
-- Facts (facts.py) ----------------------------------------------------------------------

-- name: save_fact
-- The first write wins; a repeat (same digest, so the same bytes) writes nothing.
INSERT INTO facts (digest, data, created_at) VALUES (?, ?, ?)
ON CONFLICT (digest) DO NOTHING;

-- name: load_fact
SELECT data FROM facts WHERE digest = ?;

-- name: load_facts
-- :digests is a JSON array of digests.
SELECT digest, data FROM facts WHERE digest IN (SELECT value FROM json_each(?));

-- Schedules (schedules.py) --------------------------------------------------------------

-- name: insert_schedule
-- Returns the row only when it was inserted (an existing id is an error).
INSERT INTO schedules (schedule_id, workflow, input, cron, at, timezone, next_fire_at, overlap,
                       catchup_window, created_at, updated_at)
VALUES (:schedule_id, :workflow, :input, :cron, :at, :timezone, :next_fire_at, :overlap,
        :catchup_window, :now, :now)
ON CONFLICT (schedule_id) DO NOTHING
RETURNING *;

-- name: get_schedule
SELECT * FROM schedules WHERE schedule_id = ?;

-- name: list_schedules
SELECT * FROM schedules WHERE :workflow IS NULL OR workflow = :workflow ORDER BY schedule_id;

-- name: pause_schedule
UPDATE schedules SET paused = 1, updated_at = :now
WHERE schedule_id = :schedule_id AND paused = 0;

-- name: resume_schedule
-- Only a paused schedule: resuming an active one must not move its next tick.
UPDATE schedules SET paused = 0, next_fire_at = :next_fire_at, updated_at = :now
WHERE schedule_id = :schedule_id AND paused = 1;

-- name: delete_schedule
DELETE FROM schedules WHERE schedule_id = :schedule_id;

-- name: due_schedules
-- Walks schedules_due: active schedules of the caller's workflows, earliest first.
SELECT * FROM schedules
WHERE paused = 0 AND next_fire_at IS NOT NULL AND next_fire_at <= :now
  AND workflow IN (SELECT value FROM json_each(:workflows))
ORDER BY next_fire_at, schedule_id
LIMIT :limit;

-- name: next_schedule
SELECT min(next_fire_at) AS earliest FROM schedules
WHERE paused = 0 AND next_fire_at IS NOT NULL
  AND workflow IN (SELECT value FROM json_each(:workflows));

-- name: fire_schedule
-- The compare-and-set that makes a tick fire once: only while next_fire_at is
-- still the due time the caller read, the schedule is not paused and the tick
-- is due on the store clock. The caller inserts the tick's run in the same
-- transaction when a row comes back. Without a run (a skipped tick) the last
-- run stays as it was.
UPDATE schedules
SET next_fire_at = :next_fire_at,
    last_fire_at = coalesce(:fired_tick, last_fire_at),
    last_run_id = coalesce(:run_id, last_run_id),
    updated_at = :now
WHERE schedule_id = :schedule_id AND paused = 0 AND next_fire_at = :expected
  AND :tick <= :now
RETURNING schedule_id;

-- Operator reads (reads.py) -------------------------------------------------------------

-- name: get_run
SELECT * FROM runs WHERE run_id = ?;

-- name: get_runs
SELECT * FROM runs WHERE run_id IN (SELECT value FROM json_each(?));

-- name: load_events
SELECT * FROM events WHERE run_id = ? AND seq > ? ORDER BY seq;

-- name: first_event
SELECT * FROM events WHERE run_id = ? AND seq = 0;

-- name: runs_by_state
SELECT state, count(*) AS n FROM runs GROUP BY state;

-- name: oldest_due
-- The earliest moment a run that can be claimed now became due; each branch
-- walks its partial index (runs_due, runs_lease), as claim_candidates does.
SELECT min(due) AS due FROM (
    SELECT min(wake_at) AS due FROM runs
    WHERE state IN ('pending', 'suspended') AND wake_at <= :now
    UNION ALL
    SELECT min(lease_expires_at) AS due FROM runs
    WHERE state = 'running' AND lease_expires_at < :now);

-- name: run_filter
-- A fragment, included as {run_filter}: the filters of list_runs and count_runs
-- but the workflow (:states is a JSON array, or NULL for no filter).
(:states IS NULL OR state IN (SELECT value FROM json_each(:states)))
  AND (:since IS NULL OR created_at >= :since)
  AND (:until IS NULL OR created_at < :until)
  AND (:parent_run_id IS NULL OR parent_run_id = :parent_run_id)

-- name: list_runs
-- :workflows is a JSON array (runs of any of them) or NULL (no filter).
SELECT * FROM runs
WHERE (:workflows IS NULL OR workflow IN (SELECT value FROM json_each(:workflows)))
  AND {run_filter}
  AND created_at BETWEEN :low AND :high
  AND (created_at, run_id) < (:before_created, :before_run_id)
ORDER BY created_at DESC, run_id DESC
LIMIT :limit;

-- name: list_runs_by_workflow
-- One workflow: walks the runs_workflow index.
SELECT * FROM runs
WHERE workflow = :workflow AND {run_filter}
  AND created_at BETWEEN :low AND :high
  AND (created_at, run_id) < (:before_created, :before_run_id)
ORDER BY created_at DESC, run_id DESC
LIMIT :limit;

-- name: list_runs_oldest
-- list_runs oldest first.
SELECT * FROM runs
WHERE (:workflows IS NULL OR workflow IN (SELECT value FROM json_each(:workflows)))
  AND {run_filter}
  AND created_at BETWEEN :low AND :high
  AND (created_at, run_id) > (:before_created, :before_run_id)
ORDER BY created_at, run_id
LIMIT :limit;

-- name: list_runs_by_workflow_oldest
-- list_runs_by_workflow oldest first.
SELECT * FROM runs
WHERE workflow = :workflow AND {run_filter}
  AND created_at BETWEEN :low AND :high
  AND (created_at, run_id) > (:before_created, :before_run_id)
ORDER BY created_at, run_id
LIMIT :limit;

-- name: list_runs_by_state
-- One state (whatever the workflows): walks the runs_state index. INDEXED BY:
-- with statistics that say most runs are completed, the planner would walk
-- runs_created instead, through every run when the state is rare.
SELECT * FROM runs INDEXED BY runs_state
WHERE state = :state
  AND (:workflows IS NULL OR workflow IN (SELECT value FROM json_each(:workflows)))
  AND {run_filter}
  AND created_at BETWEEN :low AND :high
  AND (created_at, run_id) < (:before_created, :before_run_id)
ORDER BY created_at DESC, run_id DESC
LIMIT :limit;

-- name: list_runs_by_state_oldest
-- list_runs_by_state oldest first.
SELECT * FROM runs INDEXED BY runs_state
WHERE state = :state
  AND (:workflows IS NULL OR workflow IN (SELECT value FROM json_each(:workflows)))
  AND {run_filter}
  AND created_at BETWEEN :low AND :high
  AND (created_at, run_id) > (:before_created, :before_run_id)
ORDER BY created_at, run_id
LIMIT :limit;

-- name: list_runs_ended
-- Ended runs, latest end first: walks runs_ended (updated_at, run_id). The plain
-- bound on the first key is the index range (as list_runs' created_at BETWEEN),
-- here and in the sorted lists below. :workflows: a JSON array, or NULL.
SELECT * FROM runs INDEXED BY runs_ended
WHERE state IN ('completed', 'failed', 'cancelled', 'continued', 'terminated')
  AND (:workflows IS NULL OR workflow IN (SELECT value FROM json_each(:workflows)))
  AND {run_filter}
  AND updated_at <= :key_at AND (updated_at, run_id) < (:key_at, :key_id)
ORDER BY updated_at DESC, run_id DESC
LIMIT :limit;

-- name: list_runs_ended_oldest
SELECT * FROM runs INDEXED BY runs_ended
WHERE state IN ('completed', 'failed', 'cancelled', 'continued', 'terminated')
  AND (:workflows IS NULL OR workflow IN (SELECT value FROM json_each(:workflows)))
  AND {run_filter}
  AND updated_at >= :key_at AND (updated_at, run_id) > (:key_at, :key_id)
ORDER BY updated_at, run_id
LIMIT :limit;

-- name: list_runs_workflow
-- By workflow name (Z to A), then newest first: walks runs_workflow.
SELECT * FROM runs INDEXED BY runs_workflow
WHERE (:workflows IS NULL OR workflow IN (SELECT value FROM json_each(:workflows)))
  AND {run_filter}
  AND workflow <= :key_text
  AND (workflow, created_at, run_id) < (:key_text, :key_at, :key_id)
ORDER BY workflow DESC, created_at DESC, run_id DESC
LIMIT :limit;

-- name: list_runs_workflow_oldest
SELECT * FROM runs INDEXED BY runs_workflow
WHERE (:workflows IS NULL OR workflow IN (SELECT value FROM json_each(:workflows)))
  AND {run_filter}
  AND workflow >= :key_text
  AND (workflow, created_at, run_id) > (:key_text, :key_at, :key_id)
ORDER BY workflow, created_at, run_id
LIMIT :limit;

-- name: list_runs_state
-- By state name, then newest first: walks runs_state.
SELECT * FROM runs INDEXED BY runs_state
WHERE (:workflows IS NULL OR workflow IN (SELECT value FROM json_each(:workflows)))
  AND {run_filter}
  AND state <= :key_text
  AND (state, created_at, run_id) < (:key_text, :key_at, :key_id)
ORDER BY state DESC, created_at DESC, run_id DESC
LIMIT :limit;

-- name: list_runs_state_oldest
SELECT * FROM runs INDEXED BY runs_state
WHERE (:workflows IS NULL OR workflow IN (SELECT value FROM json_each(:workflows)))
  AND {run_filter}
  AND state >= :key_text
  AND (state, created_at, run_id) > (:key_text, :key_at, :key_id)
ORDER BY state, created_at, run_id
LIMIT :limit;

-- name: count_runs
SELECT count(*) AS n FROM runs
WHERE (:workflows IS NULL OR workflow IN (SELECT value FROM json_each(:workflows)))
  AND {run_filter};

-- name: count_runs_by_state
SELECT state, count(*) AS n FROM runs
WHERE (:workflows IS NULL OR workflow IN (SELECT value FROM json_each(:workflows)))
  AND {run_filter}
GROUP BY state;

-- Workers: versions and liveness (workers.py) -------------------------------------------

-- name: leased_owners
-- Owners of live leases, of runs and of dispatched steps (tasks): the workers
-- whose liveness a sweep probes (see liveness.py). Each walks its lease index.
SELECT lease_owner FROM runs
WHERE state = 'running' AND lease_expires_at >= :now AND lease_owner IS NOT NULL
UNION
SELECT lease_owner FROM tasks
WHERE state = 'leased' AND lease_expires_at >= :now AND lease_owner IS NOT NULL;

-- name: expire_owner_leases
-- A dead owner's leases expire now; the next claim takes each under a larger
-- token, so fencing is exactly as after a TTL expiry.
UPDATE runs SET lease_expires_at = :now
WHERE state = 'running' AND lease_owner = :owner AND lease_expires_at > :now;

-- name: expire_owner_tasks
-- A dead owner's task leases expire now: the next claim's sweep makes each
-- task available again at its next attempt, exactly as after a TTL expiry.
UPDATE tasks SET lease_expires_at = :now
WHERE state = 'leased' AND lease_owner = :owner AND lease_expires_at > :now;

-- name: register_version
-- A worker's pair: first_seen is kept from its first registration.
INSERT INTO worker_versions (workflow, version, worker, host, pid, first_seen, last_seen,
                             live_until)
VALUES (:workflow, :version, :worker, :host, :pid, :now, :now, :live_until)
ON CONFLICT (workflow, version, worker) DO UPDATE
SET host = excluded.host, pid = excluded.pid, last_seen = excluded.last_seen,
    live_until = excluded.live_until;

-- name: prune_versions
DELETE FROM worker_versions WHERE last_seen < :before;

-- name: forget_versions
DELETE FROM worker_versions WHERE worker = :worker;

-- name: list_versions
SELECT * FROM worker_versions WHERE live_until >= :since ORDER BY workflow, version, worker;
