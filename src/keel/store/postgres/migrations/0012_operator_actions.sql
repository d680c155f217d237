-- Keel PostgreSQL schema version 12: operator actions.
-- A run may end 'terminated' (an operator's terminate: no cleanup ran). A
-- retry or fork names the run whose journal it copied (forked_from) and the
-- seq of that journal where the copy stops (fork_seq); neither changes while
-- the run lives, so the per-step UPDATE stays HOT. Prune walks ended runs by
-- end time: an ended run's updated_at, which nothing changes once it ended.

ALTER TABLE runs DROP CONSTRAINT runs_state_check;
ALTER TABLE runs ADD CONSTRAINT runs_state_check CHECK (state IN
    ('pending', 'running', 'suspended', 'completed', 'failed', 'cancelled', 'continued',
     'terminated'));
ALTER TABLE runs ADD COLUMN forked_from text COLLATE "C";
ALTER TABLE runs ADD COLUMN fork_seq bigint;

CREATE INDEX runs_forked_from ON runs (forked_from) WHERE forked_from IS NOT NULL;
CREATE INDEX runs_ended ON runs (updated_at)
    WHERE state IN ('completed', 'failed', 'cancelled', 'continued', 'terminated');
