"""Change notifications on PostgreSQL (:class:`~keel.store.ports.ChangeFeed`): every
Keel write worth waking for NOTIFYs the store's channel (see _listener.py)."""

from __future__ import annotations

from dataclasses import dataclass

from keel.store.postgres.database import PgDatabase


@dataclass
class PgChanges:
    """Waits on the LISTEN connection of a :class:`PgDatabase`."""

    db: PgDatabase

    async def wait(self, timeout: float) -> None:
        if timeout > 0:
            await self.db.waiters.wait(timeout)

    async def wait_for_work(self, timeout: float) -> None:
        # Claim loops wait here: a finished run makes nothing claimable, and
        # capacity freed in this process wakes the worker's claim loop directly.
        if timeout > 0:
            await self.db.work_waiters.wait(timeout)

    async def wait_for_schedules(self, timeout: float) -> None:
        # Schedule loops wait here, woken by schedules created or resumed (or the
        # listener reconnecting), not by every run.
        if timeout > 0:
            await self.db.schedule_waiters.wait(timeout)
