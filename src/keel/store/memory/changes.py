"""The in-memory store's change feed (:class:`~keel.store.ports.ChangeFeed`).

Every write wakes every waiter: the three waits differ only in the databases,
where a finished run or a schedule change is told apart from other writes.
"""

from __future__ import annotations

from keel.store.memory.tables import Tables


class MemoryChanges:
    """Latency hints over the store's :class:`Tables`."""

    def __init__(self, tables: Tables) -> None:
        self._t = tables

    async def wait(self, timeout: float) -> None:
        await self._t.wait(timeout)

    async def wait_for_work(self, timeout: float) -> None:
        await self._t.wait(timeout)

    async def wait_for_schedules(self, timeout: float) -> None:
        await self._t.wait(timeout)
