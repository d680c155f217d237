"""Workers' versions and liveness on SQLite (:class:`keel.store.ports.WorkerRegistry`).

Liveness locks are flocks on files beside the database (see
:mod:`keel.store.sqlite.liveness`).
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import sys
from pathlib import Path

from keel.store._checks import VERSION_ROWS_KEPT, check_registration, check_versions
from keel.store.base import VersionPairs, WorkerVersion
from keel.store.sqlite._db import Capability, Database
from keel.store.sqlite._rows import worker_version
from keel.store.sqlite._sql import Q
from keel.store.sqlite.liveness import (
    FileLivenessLock,
    claim_dead,
    forget,
    hold,
    lock_dir,
    lock_path,
    remove_unleased,
)

log = logging.getLogger("keel.store.sqlite")


class SQLiteWorkers(Capability):
    """:class:`~keel.store.ports.WorkerRegistry` of
    :class:`~keel.store.sqlite.store.SQLiteStore`."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self._locks: list[FileLivenessLock] = []  # handed out; released on close

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

        def op(conn: sqlite3.Connection) -> None:
            now = self._db.clock()
            conn.execute(Q["prune_versions"], {"before": now - VERSION_ROWS_KEPT})
            seen = {"worker": worker, "host": host, "pid": pid, "now": now}
            pair_params = [
                seen | {"workflow": w, "version": v, "live_until": now + live_for} for w, v in pairs
            ]
            conn.executemany(Q["register_version"], pair_params)

        await self._db.write(op)

    async def forget_versions(self, worker: str) -> None:
        await self._db.write(
            lambda conn: conn.execute(Q["forget_versions"], {"worker": worker}).close()
        )

    async def list_versions(self, *, live: bool = True) -> list[WorkerVersion]:
        since = self._db.clock() if live else -math.inf
        return await self._db.read_all(Q["list_versions"], {"since": since}, worker_version)

    async def hold_liveness(self, owner: str) -> FileLivenessLock | None:
        if sys.platform == "win32":  # no flock: leases expire by TTL alone
            return None
        folder = lock_dir(self._db.path)
        folder.mkdir(exist_ok=True)
        path = lock_path(folder, owner)
        fd = hold(path, owner)
        if fd is None:
            log.warning("liveness lock %s is held by another worker named %r", path, owner)
            return None
        # The files of workers that died holding no lease are found by no sweep.
        await self.expire_dead_owners()
        remove_unleased(folder, set(await self._leased_owners()))
        lock = FileLivenessLock(path, fd)
        self._locks = [held for held in self._locks if held.held] + [lock]
        return lock

    async def expire_dead_owners(self) -> int:
        if sys.platform == "win32":
            return 0
        folder = lock_dir(self._db.path)
        dead: dict[str, tuple[Path, int]] = {}
        for owner in await self._leased_owners():  # a few non-blocking opens per poll
            path = lock_path(folder, owner)
            fd = claim_dead(path)
            if fd is not None:
                dead[owner] = (path, fd)
        if not dead:
            return 0

        def expire(conn: sqlite3.Connection) -> int:
            now = self._db.clock()
            return sum(
                conn.execute(Q[query], {"owner": o, "now": now}).rowcount
                for o in dead
                for query in ("expire_owner_leases", "expire_owner_tasks")
            )

        try:
            expired = await self._db.write(expire, notify=True)
        except BaseException:
            for _path, fd in dead.values():  # keep the files: the next sweep retries
                os.close(fd)
            raise
        for path, fd in dead.values():  # expired: nothing is left to find them for
            forget(path, fd)
        if expired:
            log.warning(
                "expired %d lease(s) of dead worker(s) %s", expired, ", ".join(sorted(dead))
            )
        return expired

    async def _leased_owners(self) -> list[str]:
        """Owners of live leases (runs and tasks): the workers whose liveness lock a
        sweep probes."""

        def op(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(Q["leased_owners"], {"now": self._db.clock()})
            return [row["lease_owner"] for row in rows]

        return await self._db.read(op)
