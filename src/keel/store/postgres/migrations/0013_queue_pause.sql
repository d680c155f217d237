-- Keel PostgreSQL schema version 13: a queue limit of 0 pauses the queue.
-- No new task of a queue whose limit is 0 is leased (tasks already running
-- finish); the dashboard's pause and resume set and remove it.

ALTER TABLE queues DROP CONSTRAINT queues_concurrency_check;
ALTER TABLE queues ADD CONSTRAINT queues_concurrency_check CHECK (concurrency >= 0);
