-- Keel PostgreSQL schema version 17: the runs list sorted by end time.
-- runs_ended, prune's walk of ended runs by end time (an ended run's
-- updated_at, which nothing changes once it has ended), takes run_id as well:
-- the keyset pages of the runs list sorted by end time, newest or oldest end
-- first, walk it without sorting. The other sorts (workflow, state) walk
-- runs_workflow and runs_state.

DROP INDEX runs_ended;
CREATE INDEX runs_ended ON runs (updated_at, run_id)
    WHERE state IN ('completed', 'failed', 'cancelled', 'continued', 'terminated');
