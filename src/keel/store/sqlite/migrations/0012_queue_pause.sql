-- Keel schema version 12: a queue limit of 0 pauses the queue.
-- No new task of a queue whose limit is 0 is leased (tasks already running
-- finish); the dashboard's pause and resume set and remove it. SQLite cannot
-- change a CHECK constraint in place, so the two-column table is rebuilt.

CREATE TABLE queues_new (
    queue       TEXT PRIMARY KEY,
    concurrency INTEGER NOT NULL CHECK (concurrency >= 0)
) WITHOUT ROWID;

INSERT INTO queues_new (queue, concurrency) SELECT queue, concurrency FROM queues;
DROP TABLE queues;
ALTER TABLE queues_new RENAME TO queues;
