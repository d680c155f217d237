"""The SQLite store's registry of worker versions: a mixin of :class:`SQLiteStore`."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, TypeVar

from keel.store._checks import VERSION_ROWS_KEPT, check_registration, check_versions
from keel.store.base import WorkerVersion
from keel.store.sqlite import _sql

T = TypeVar("T")
Q = _sql.queries()


class SQLiteVersions:
    """Worker-version methods of :class:`~keel.store.sqlite.SQLiteStore`."""

    _clock: Callable[[], float]

    if TYPE_CHECKING:  # defined by SQLiteStore

        async def _write(
            self,
            op: Callable[[sqlite3.Connection], T],
            *,
            notify: bool = False,
            work: bool = True,
        ) -> T: ...

        async def _read(self, op: Callable[[sqlite3.Connection], T]) -> T: ...

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

        def op(conn: sqlite3.Connection) -> None:
            now = self._clock()
            conn.execute(Q["prune_versions"], {"before": now - VERSION_ROWS_KEPT})
            for workflow, version in pairs:
                params = {
                    "workflow": workflow,
                    "version": version,
                    "worker": worker,
                    "host": host,
                    "pid": pid,
                    "now": now,
                    "live_until": now + live_for,
                }
                conn.execute(Q["register_version"], params)

        await self._write(op)

    async def forget_versions(self, worker: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(Q["forget_versions"], {"worker": worker})

        await self._write(op)

    async def list_versions(self, *, live: bool = True) -> list[WorkerVersion]:
        def op(conn: sqlite3.Connection) -> list[WorkerVersion]:
            since = self._clock() if live else -math.inf
            return [
                WorkerVersion(*row) for row in conn.execute(Q["list_versions"], {"since": since})
            ]

        return await self._read(op)
