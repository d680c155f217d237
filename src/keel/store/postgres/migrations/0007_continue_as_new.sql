-- Keel PostgreSQL schema version 7: continue-as-new.
-- A run may end 'continued', handing over to a successor of the same chain.
-- chain_id is the chain's first run id (NULL for a first run, so top-level
-- rows stay narrow: coalesce(chain_id, run_id) is the chain), generation
-- counts the switches, continued_to names the successor. None of them changes
-- while the run lives, so the per-step UPDATE of the row stays HOT.

ALTER TABLE runs DROP CONSTRAINT runs_state_check;
ALTER TABLE runs ADD CONSTRAINT runs_state_check CHECK (state IN
    ('pending', 'running', 'suspended', 'completed', 'failed', 'cancelled', 'continued'));
ALTER TABLE runs ADD COLUMN chain_id text COLLATE "C";
ALTER TABLE runs ADD COLUMN generation integer NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN continued_to text COLLATE "C";

CREATE INDEX runs_chain ON runs (chain_id) WHERE chain_id IS NOT NULL;
