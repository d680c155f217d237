-- Keel schema version 4: cluster-wide queue limits.
-- A row caps how many tasks of one queue may be leased at once, over every
-- worker on this database; a queue without a row has no such cap. Claims of a
-- capped queue count its leased tasks (tasks_leased_queue) in the same
-- BEGIN IMMEDIATE transaction that leases more.

CREATE TABLE queues (
    queue       TEXT PRIMARY KEY,
    concurrency INTEGER NOT NULL CHECK (concurrency >= 1)
) WITHOUT ROWID;

CREATE INDEX tasks_leased_queue ON tasks (queue) WHERE state = 'leased';
