-- Child runs (version 6): a child knows its parent, what happens to it when
-- the parent ends (parent_close), and how deep it is. NULL parent: a run
-- started by a client. The index serves the cascade when a parent ends.
ALTER TABLE runs ADD COLUMN parent_run_id TEXT;
ALTER TABLE runs ADD COLUMN parent_close TEXT
    CHECK (parent_close IN ('cancel', 'abandon', 'wait'));
ALTER TABLE runs ADD COLUMN depth INTEGER NOT NULL DEFAULT 0;

CREATE INDEX runs_parent ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL;
