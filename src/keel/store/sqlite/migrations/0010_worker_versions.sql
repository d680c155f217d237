-- Worker versions (version 10): the (workflow, version) pairs each worker has
-- registered, upserted when it starts and refreshed by its heartbeat loop. A
-- pair is live while some row of it has live_until >= now (the worker sets it
-- to a few refresh intervals ahead), so operators (and `keel runs show`) see
-- which versions some worker can run. A drained worker deletes its rows; rows
-- of dead workers are pruned a day after they were last seen.
CREATE TABLE worker_versions (
    workflow   TEXT NOT NULL,
    version    TEXT NOT NULL,
    worker     TEXT NOT NULL,  -- the worker's lease owner id
    host       TEXT NOT NULL,
    pid        INTEGER NOT NULL,
    first_seen REAL NOT NULL,
    last_seen  REAL NOT NULL,
    live_until REAL NOT NULL,
    PRIMARY KEY (workflow, version, worker)
) WITHOUT ROWID;

-- Claims take only runs of the claimer's pairs: the due index carries them,
-- so runs of versions it lacks are skipped without reading their rows.
DROP INDEX runs_due;

CREATE INDEX runs_due ON runs (wake_at, workflow, version) WHERE state IN ('pending', 'suspended');
