-- Keel PostgreSQL schema version 4: cluster-wide queue limits.
-- A row caps how many tasks of one queue may be leased at once, over every
-- worker on this database; a queue without a row has no such cap. A claim of
-- capped queues locks their rows first (FOR UPDATE, in queue order), so claims
-- of one capped queue take turns and each counts the leases committed before
-- it (tasks_leased_queue).

CREATE TABLE queues (
    queue       text COLLATE "C" PRIMARY KEY,
    concurrency integer NOT NULL CHECK (concurrency >= 1)
);

CREATE INDEX tasks_leased_queue ON tasks (queue) WHERE state = 'leased';
