"""The in-memory store's registry of worker versions
(:class:`~keel.store.ports.WorkerRegistry`).

It has no liveness locks: the store lives in one process, so a dead worker's
leases expire by their TTL alone.
"""

from __future__ import annotations

from keel.store._checks import VERSION_ROWS_KEPT, check_registration, check_versions
from keel.store.base import VersionPairs, WorkerVersion
from keel.store.memory.tables import Tables
from keel.store.ports import LivenessLock


class MemoryWorkers:
    """Workers' ``(workflow, version)`` pairs, over the store's :class:`Tables`."""

    def __init__(self, tables: Tables) -> None:
        self._t = tables

    async def register_versions(
        self, worker: str, versions: VersionPairs, *, host: str, pid: int, live_for: float
    ) -> None:
        check_registration(worker, host, pid, live_for)
        pairs = check_versions(versions) or []
        rows = self._t.versions
        with self._t.transaction() as now:
            for key, row in list(rows.items()):
                if row.last_seen < now - VERSION_ROWS_KEPT:
                    del rows[key]
            for workflow, version in pairs:
                old = rows.get((workflow, version, worker))
                first = now if old is None else old.first_seen
                rows[(workflow, version, worker)] = WorkerVersion(
                    workflow, version, worker, host, pid, first, now, now + live_for
                )

    async def forget_versions(self, worker: str) -> None:
        with self._t.transaction():
            for key in [k for k in self._t.versions if k[2] == worker]:
                del self._t.versions[key]

    async def list_versions(self, *, live: bool = True) -> list[WorkerVersion]:
        with self._t.transaction() as now:
            return [
                row
                for _, row in sorted(self._t.versions.items())
                if not live or row.live_until >= now
            ]

    async def hold_liveness(self, owner: str) -> LivenessLock | None:
        return None

    async def expire_dead_owners(self) -> int:
        return 0
