-- Keel PostgreSQL schema version 11: worker liveness locks.
-- A worker holds a session-level advisory lock (pg_advisory_lock(classid,
-- lock_key), on a connection of its own) for its whole life and registers it
-- here. A registered worker whose lock is gone has lost its session (its
-- process died), so other workers expire its leases at once instead of after
-- the lease TTL; owners not registered here (older workers) are left to the TTL.

CREATE TABLE worker_locks (
    owner      text COLLATE "C" PRIMARY KEY,
    lock_key   bigint NOT NULL,  -- second key of the advisory lock (0 .. 2^31-1)
    started_at float8 NOT NULL
);
