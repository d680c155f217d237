-- Keel schema version 14: graph specs by digest.
-- A graph's version is the digest of its canonical spec; the spec is stored
-- under it once (by the worker that registers the graph and by the client that
-- starts a run of it), so the CLI, the dashboard and the replay checker can draw,
-- approve and check any graph run without importing the graph's code.

CREATE TABLE graph_specs (
    workflow   TEXT NOT NULL,  -- the graph's name
    version    TEXT NOT NULL,  -- the digest of spec
    spec       BLOB NOT NULL,  -- canonical JSON
    created_at REAL NOT NULL,
    PRIMARY KEY (workflow, version)
) WITHOUT ROWID;
