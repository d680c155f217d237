"""Workers on PostgreSQL (:class:`~keel.store.ports.WorkerRegistry`): the versions
each worker runs, and liveness by session-level advisory locks (liveness.py)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from keel.store._checks import VERSION_ROWS_KEPT, check_registration, check_versions
from keel.store.base import VersionPairs, WorkerVersion
from keel.store.postgres._pool import Conn
from keel.store.postgres._sql import DICT, WORKER_VERSION, Q
from keel.store.postgres.database import PgDatabase
from keel.store.postgres.liveness import (
    LIVENESS_CLASS,
    SERVER_KEEPALIVES,
    PgLivenessLock,
    lock_key,
    take,
)

log = logging.getLogger("keel.store.postgres")


@dataclass
class PgWorkers:
    """Workers' ``(workflow, version)`` pairs and liveness locks, in a :class:`PgDatabase`."""

    db: PgDatabase
    _locks: list[PgLivenessLock] = field(default_factory=list)  # handed out; released on close

    async def release_locks(self) -> None:
        """Release every liveness lock this store handed out (on closing it)."""
        locks, self._locks = self._locks, []
        for lock in locks:
            await lock.release()

    async def register_versions(
        self, worker: str, versions: VersionPairs, *, host: str, pid: int, live_for: float
    ) -> None:
        check_registration(worker, host, pid, live_for)
        pairs = check_versions(versions) or []
        params = {
            "worker": worker,
            "host": host,
            "pid": pid,
            "live_for": float(live_for),
            "kept": VERSION_ROWS_KEPT,
            "workflows": [w for w, _ in pairs],
            "versions": [v for _, v in pairs],
        }
        await self.db.fetch(Q["register_versions"], params)

    async def forget_versions(self, worker: str) -> None:
        await self.db.fetch(Q["forget_versions"], {"worker": worker})

    async def list_versions(self, *, live: bool = True) -> list[WorkerVersion]:
        return await self.db.fetch(Q["list_versions"], {"live": live}, WORKER_VERSION)

    async def hold_liveness(self, owner: str) -> PgLivenessLock | None:
        key = lock_key(self.db.schema, owner)
        with self.db.pool.errors():
            conn = await take(self._connect, owner, key)
        if conn is None:
            log.warning("liveness lock of %s is held by another session", owner)
            return None
        lock = PgLivenessLock(self._connect, owner, key, conn)
        self._locks = [held for held in self._locks if not held.released] + [lock]
        return lock

    async def expire_dead_owners(self) -> int:
        params = {"lock_class": LIVENESS_CLASS, "channel": self.db.channel}
        [row] = await self.db.fetch(Q["expire_dead_owners"], params, DICT)
        if row["owners"]:
            log.warning(
                "expired %d lease(s) of dead worker(s) %s",
                row["expired"],
                ", ".join(sorted(row["owners"])),
            )
        return int(row["expired"])

    async def _connect(self) -> Conn:
        """A liveness session: the store's settings, tighter server keepalives."""
        options = f"{self.db.pool.kwargs.get('options', '')} {SERVER_KEEPALIVES}".strip()
        return await self.db.pool.connect(options=options)
