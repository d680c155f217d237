-- Keel PostgreSQL schema version 15: graph specs by digest.
-- A graph's version is the digest of its canonical spec; the spec is stored
-- under it once (by the worker that registers the graph and by the client that
-- starts a run of it), so the CLI, the dashboard and the replay checker can draw,
-- approve and check any graph run without importing the graph's code.

CREATE TABLE graph_specs (
    workflow   text COLLATE "C" NOT NULL,  -- the graph's name
    version    text COLLATE "C" NOT NULL,  -- the digest of spec
    spec       bytea NOT NULL,             -- canonical JSON
    created_at float8 NOT NULL,
    PRIMARY KEY (workflow, version)
);
