-- Keel schema version 5: schedules.
-- A schedule starts runs of a workflow on a cron expression (in a time zone)
-- or once at a given time. Any worker fires a due schedule with a
-- compare-and-set on next_fire_at that creates the tick's run in the same
-- transaction; schedule loops walk schedules_due. Times are seconds since the
-- epoch on the store clock.

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
