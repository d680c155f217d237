-- Keel PostgreSQL schema version 10: worker versions.
-- The (workflow, version) pairs each worker has registered, upserted when it
-- starts and refreshed by its heartbeat loop. A pair is live while some row of
-- it has live_until >= now (the worker sets it a few refresh intervals ahead),
-- so operators (and `keel runs show`) see which versions some worker can run.
-- A drained worker deletes its rows; rows of dead workers are pruned a day
-- after they were last seen. Claims filter on the claimer's pairs (no schema
-- change needed for that: the runs row has workflow and version).

CREATE TABLE worker_versions (
    workflow   text COLLATE "C" NOT NULL,
    version    text COLLATE "C" NOT NULL,
    worker     text COLLATE "C" NOT NULL,  -- the worker's lease owner id
    host       text NOT NULL,
    pid        integer NOT NULL,
    first_seen float8 NOT NULL,
    last_seen  float8 NOT NULL,
    live_until float8 NOT NULL,
    PRIMARY KEY (workflow, version, worker)
);
