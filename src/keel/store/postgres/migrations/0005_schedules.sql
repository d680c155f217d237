-- Keel PostgreSQL schema version 5: schedules.
-- A schedule starts runs of a workflow on a cron expression (in a time zone)
-- or once at a given time. Any worker fires a due schedule with one statement:
-- a compare-and-set on next_fire_at that creates the tick's run (concurrent
-- firers of one tick queue on the row and all but the first match nothing).
-- Schedule loops walk schedules_due. Times are seconds since the epoch on the
-- database clock.

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
