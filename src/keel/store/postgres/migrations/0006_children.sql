-- Keel PostgreSQL schema version 6: child runs.
-- A child knows its parent, what happens to it when the parent ends
-- (parent_close) and how deep it is; NULL parent: a run started by a client
-- (a NULL costs a bit of the row's null bitmap, so top-level rows stay narrow).
-- runs_parent serves the cascade when a parent ends; parent_run_id never
-- changes, so the per-step UPDATE of the row stays HOT.

ALTER TABLE runs ADD COLUMN parent_run_id text COLLATE "C";
ALTER TABLE runs ADD COLUMN parent_close text
    CHECK (parent_close IN ('cancel', 'abandon', 'wait'));
ALTER TABLE runs ADD COLUMN depth smallint NOT NULL DEFAULT 0;

CREATE INDEX runs_parent ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL;
