"""Dispatched steps on PostgreSQL (:class:`~keel.store.ports.TaskQueues`): tasks any
worker may claim, each under a lease of its own. Tasks are inserted by the
commit of the turn that dispatches them (see runs.py)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg.rows import tuple_row

from keel.store._checks import (
    check_claim_limit,
    check_queue_limit,
    check_queues,
    check_ttl,
    task_fence_error,
)
from keel.store.base import QueueInfo, TaskLease, TaskRecord
from keel.store.postgres._sql import DICT, QUEUE, TASK, Q, without
from keel.store.postgres._writes import Statement
from keel.store.postgres.database import PgDatabase


@dataclass
class PgTasks:
    """Task queues and their limits, in a :class:`PgDatabase`."""

    db: PgDatabase

    async def claim(
        self, owner: str, queues: Collection[str], *, limit: int, ttl: float
    ) -> list[tuple[TaskLease, TaskRecord]]:
        check_claim_limit(limit)
        check_ttl(ttl)
        names = check_queues(queues)
        params = {
            "owner": owner,
            "queues": names,
            "limit": limit,
            "ttl": ttl,
            "channel": self.db.channel,
        }
        # The sweep, the lock of capped queues and the claim: one pipeline, one
        # round trip, one transaction. The claim is a statement of its own so
        # that its snapshot sees what the sweep freed and what claims that held
        # the queue locks before it committed.
        _, _, rows = await self.db.transaction(
            Statement(Q["sweep_tasks"], {"channel": self.db.channel}, tuple_row),
            Statement(Q["lock_queues"], {"queues": names}, tuple_row),
            Statement(Q["claim_tasks"], params, DICT),
            clocked=True,
        )
        claimed = []
        for row in rows:
            if row["task_id"] is None:  # the clock-only row: nothing was claimable
                continue
            task = TaskRecord(**without(row, "now"))
            assert task.lease_expires_at is not None
            claimed.append(
                (TaskLease(task.task_id, owner, task.attempt, task.lease_expires_at), task)
            )
        return claimed

    async def renew(self, owner: str, leases: Sequence[TaskLease], ttl: float) -> frozenset[int]:
        check_ttl(ttl)
        self.db.pool.check_open()
        mine = [lease for lease in leases if lease.owner == owner]
        if not mine:
            return frozenset(lease.task_id for lease in leases)
        held = {"task_ids": [m.task_id for m in mine], "attempts": [m.attempt for m in mine]}
        params = {"owner": owner, "ttl": ttl} | held
        [row] = await self.db.fetch_clocked(Q["renew_task_leases"], params, DICT)
        return frozenset(lease.task_id for lease in leases) - set(row["renewed"])

    async def complete(self, lease: TaskLease, result: bytes) -> None:
        await self._end_attempt(lease, result=result)

    async def fail(self, lease: TaskLease, error: bytes, retry_at: float | None) -> None:
        await self._end_attempt(lease, error=error, retry_at=retry_at)

    async def get(self, run_id: str, command: str) -> TaskRecord | None:
        rows = await self.db.fetch(Q["get_task"], {"run_id": run_id, "command": command}, TASK)
        return rows[0] if rows else None

    async def set_limit(self, queue: str, concurrency: int | None) -> None:
        check_queue_limit(queue, concurrency)
        params = {"queue": queue, "concurrency": concurrency, "channel": self.db.channel}
        await self.db.write(Q["set_queue_limit"], params)

    async def list_queues(self) -> list[QueueInfo]:
        return await self.db.fetch(Q["list_queues"], {}, QUEUE)

    async def _end_attempt(self, lease: TaskLease, **outcome: Any) -> None:
        """Fenced by the task lease: complete (``result``) or fail (``error``, ``retry_at``)."""
        params = {
            "task_id": lease.task_id,
            "owner": lease.owner,
            "attempt": lease.attempt,
            "result": None,
            "error": None,
            "retry_at": None,
            "channel": self.db.channel,
        }
        if await self.db.write(Q["end_attempt"], params | outcome):
            return
        rows = await self.db.fetch(Q["task_fence_row"], {"task_id": lease.task_id}, DICT)
        if not rows:
            raise task_fence_error(lease, self.db.clock.now(), None)
        row = rows[0]
        held = (row["run_id"], row["state"], row["lease_owner"], row["attempt"])
        raise task_fence_error(lease, row["now"], (*held, row["lease_expires_at"]))
