"""Change hints on SQLite (:class:`keel.store.ports.ChangeFeed`): this process's
commits wake its waiters at once; other processes' commits are noticed by the
watcher thread polling ``PRAGMA data_version``."""

from __future__ import annotations

from keel.store.sqlite._db import Capability


class SQLiteChanges(Capability):
    """:class:`~keel.store.ports.ChangeFeed` of :class:`~keel.store.sqlite.store.SQLiteStore`."""

    async def wait(self, timeout: float) -> None:
        await self._db.wait(timeout, work=False)

    async def wait_for_work(self, timeout: float) -> None:
        # A run finishing in this process does not wake it; other processes'
        # commits do (they cannot be told apart).
        await self._db.wait(timeout, work=True)

    async def wait_for_schedules(self, timeout: float) -> None:
        # Schedule writes wake work waiters: a schedule loop waits as a claim loop does.
        await self._db.wait(timeout, work=True)
