"""The registry of worker versions in the PostgreSQL store (see :class:`VersionsMixin`)."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from keel.store._checks import VERSION_ROWS_KEPT, check_registration, check_versions
from keel.store.base import WorkerVersion
from keel.store.postgres._writes import _Row


class VersionsMixin:
    """:class:`~keel.store.postgres.PostgresStore`'s table of the (workflow, version)
    pairs each worker has, refreshed by its heartbeat loop."""

    if TYPE_CHECKING:  # provided by PostgresStore

        async def _fetch(self, query: str, params: dict[str, Any]) -> list[_Row]: ...

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
        params = {
            "worker": worker,
            "host": host,
            "pid": pid,
            "live_for": float(live_for),
            "kept": VERSION_ROWS_KEPT,
            "workflows": [w for w, _ in pairs],
            "versions": [v for _, v in pairs],
        }
        await self._fetch("register_versions", params)

    async def forget_versions(self, worker: str) -> None:
        await self._fetch("forget_versions", {"worker": worker})

    async def list_versions(self, *, live: bool = True) -> list[WorkerVersion]:
        rows = await self._fetch("list_versions", {"live": live})
        return [WorkerVersion(*row) for row in rows]
