"""The in-memory store's registry of worker versions: a mixin of :class:`MemoryStore`."""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from keel.store._checks import VERSION_ROWS_KEPT, check_registration, check_versions
from keel.store.base import WorkerVersion


class MemoryVersions:
    """Worker-version methods of :class:`~keel.store.memory.MemoryStore`."""

    _lock: threading.RLock
    _clock: Callable[[], float]
    _versions: dict[tuple[str, str, str], WorkerVersion]  # (workflow, version, worker) -> row

    if TYPE_CHECKING:  # defined by MemoryStore

        def _check_open(self) -> None: ...

    async def register_versions(
        self,
        worker: str,
        versions: Collection[tuple[str, str]],
        *,
        host: str,
        pid: int,
        live_for: float,
    ) -> None:
        check_registration(worker, host, pid, live_for)
        pairs = check_versions(versions) or []
        with self._lock:
            self._check_open()
            now = self._clock()
            for key, row in list(self._versions.items()):
                if row.last_seen < now - VERSION_ROWS_KEPT:
                    del self._versions[key]
            for workflow, version in pairs:
                old = self._versions.get((workflow, version, worker))
                first = now if old is None else old.first_seen
                self._versions[(workflow, version, worker)] = WorkerVersion(
                    workflow, version, worker, host, pid, first, now, now + live_for
                )

    async def forget_versions(self, worker: str) -> None:
        with self._lock:
            self._check_open()
            for key in [k for k in self._versions if k[2] == worker]:
                del self._versions[key]

    async def list_versions(self, *, live: bool = True) -> list[WorkerVersion]:
        with self._lock:
            self._check_open()
            now = self._clock()
            return [
                row
                for _, row in sorted(self._versions.items())
                if not live or row.live_until >= now
            ]
