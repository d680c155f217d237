"""Dispatched steps and idempotency keys in the PostgreSQL store (see :class:`TasksMixin`)."""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

from psycopg_pool import AsyncConnectionPool

from keel.errors import StoreError
from keel.store._checks import (
    check_claim_limit,
    check_queue_limit,
    check_queues,
    check_tasks,
    check_ttl,
    task_fence_error,
)
from keel.store.base import Lease, NewEvent, NewTask, QueueInfo, TaskLease, TaskRecord
from keel.store.postgres import _conn, _sql
from keel.store.postgres._writes import _Conn, _Row


class TasksMixin:
    """:class:`~keel.store.postgres.PostgresStore`'s dispatched steps (tasks that any
    worker may claim, each under a lease of its own) and idempotency keys."""

    # Set up by PostgresStore.
    channel: str
    _pool: AsyncConnectionPool[_Conn] | None
    _clock: _conn.ClockOffset

    if TYPE_CHECKING:  # provided by PostgresStore and GroupCommitMixin

        async def _fetch(self, query: str, params: dict[str, Any]) -> list[_Row]: ...

        async def _write(self, query: str, params: dict[str, Any]) -> list[_Row]: ...

        async def _transaction(
            self, statements: list[tuple[str, dict[str, Any]]]
        ) -> list[list[_Row]]: ...

        def _fence(
            self, lease: Lease, first_seq: int, events: Sequence[NewEvent]
        ) -> dict[str, Any]: ...

        @staticmethod
        def _journal_query(name: str, events: Sequence[NewEvent]) -> str: ...

        async def _fence_error(
            self, lease: Lease, first_seq: int, signal: int | None
        ) -> StoreError: ...

    # -- idempotency keys ------------------------------------------------------------------

    async def get_idempotent(self, scope: str, key: str) -> bytes | None:
        rows = await self._fetch("get_idempotent", {"scope": scope, "key": key})
        return bytes(rows[0][0]) if rows else None

    async def put_idempotent(self, scope: str, key: str, result: bytes) -> bytes:
        rows = await self._fetch("put_idempotent", {"scope": scope, "key": key, "result": result})
        if rows:
            return bytes(rows[0][0])
        # Lost the race: a new statement (new snapshot) sees the winner's row.
        stored = await self.get_idempotent(scope, key)
        if stored is None:
            raise StoreError(f"idempotency key {key!r} of {scope!r} vanished")
        return stored

    # -- dispatched steps ----------------------------------------------------------------

    async def dispatch_tasks(
        self,
        lease: Lease,
        first_seq: int,
        events: Sequence[NewEvent],
        tasks: Sequence[NewTask],
    ) -> list[int]:
        check_tasks(lease.run_id, tasks)
        params = self._fence(lease, first_seq, events) | {
            "task_commands": [t.command for t in tasks],
            "steps": [t.step for t in tasks],
            "queues": [t.queue for t in tasks],
            "priorities": [t.priority for t in tasks],
            "args": [t.args for t in tasks],
            "max_attempts": [t.max_attempts for t in tasks],
        }
        rows = await self._write(self._journal_query("dispatch_tasks", events), params)
        if not rows:
            raise await self._fence_error(lease, first_seq, None)
        ids = {command: task_id for _, task_id, command in rows if task_id is not None}
        return [ids[t.command] for t in tasks]

    async def claim_tasks(
        self, owner: str, queues: Collection[str], *, limit: int, ttl: float
    ) -> list[tuple[TaskLease, TaskRecord]]:
        check_claim_limit(limit)
        check_ttl(ttl)
        params = {
            "owner": owner,
            "queues": check_queues(queues),
            "limit": limit,
            "ttl": ttl,
            "channel": self.channel,
        }
        sent = time.time()
        # The sweep, the lock of capped queues and the claim: one pipeline, one
        # round trip, one transaction. The claim is a statement of its own so
        # that its snapshot sees what the sweep freed and what claims that held
        # the queue locks before it committed.
        _, _, rows = await self._transaction(
            [
                ("sweep_tasks", {"channel": self.channel}),
                ("lock_queues", {"queues": params["queues"]}),
                ("claim_tasks", params),
            ]
        )
        self._clock.observe(rows[0][0], sent, time.time())
        claimed = []
        for row in rows:
            if row[1] is None:  # the clock-only row: nothing was claimable
                continue
            task = _sql.task_record(row, offset=1)
            assert task.lease_expires_at is not None
            claimed.append(
                (TaskLease(task.task_id, owner, task.attempt, task.lease_expires_at), task)
            )
        return claimed

    async def set_queue_limit(self, queue: str, concurrency: int | None) -> None:
        check_queue_limit(queue, concurrency)
        params: dict[str, Any] = {"queue": queue, "channel": self.channel}
        if concurrency is None:
            await self._write("clear_queue_limit", params)
        else:
            await self._write("set_queue_limit", params | {"concurrency": concurrency})

    async def list_queues(self) -> list[QueueInfo]:
        rows = await self._fetch("list_queues", {})
        return [QueueInfo(q, limit, int(free), int(leased)) for q, limit, free, leased in rows]

    async def renew_task_leases(
        self, owner: str, leases: Sequence[TaskLease], ttl: float
    ) -> frozenset[int]:
        check_ttl(ttl)
        if self._pool is None:
            raise StoreError(f"{self!r} is not open")
        mine = [lease for lease in leases if lease.owner == owner]
        if not mine:
            return frozenset(lease.task_id for lease in leases)
        params = {
            "owner": owner,
            "ttl": ttl,
            "task_ids": [lease.task_id for lease in mine],
            "attempts": [lease.attempt for lease in mine],
        }
        sent = time.time()
        [(db_now, renewed)] = await self._fetch("renew_task_leases", params)
        self._clock.observe(db_now, sent, time.time())
        return frozenset(lease.task_id for lease in leases) - set(renewed)

    def _task_fence(self, lease: TaskLease) -> dict[str, Any]:
        return {
            "task_id": lease.task_id,
            "owner": lease.owner,
            "attempt": lease.attempt,
            "channel": self.channel,
        }

    async def complete_task(self, lease: TaskLease, result: bytes) -> None:
        if not await self._write("complete_task", self._task_fence(lease) | {"result": result}):
            raise await self._task_fence_error(lease)

    async def fail_task(self, lease: TaskLease, error: bytes, retry_at: float | None) -> None:
        params = self._task_fence(lease) | {"error": error, "retry_at": retry_at}
        if not await self._write("fail_task", params):
            raise await self._task_fence_error(lease)

    async def _task_fence_error(self, lease: TaskLease) -> StoreError:
        rows = await self._fetch("task_fence_row", {"task_id": lease.task_id})
        if not rows:
            return task_fence_error(lease, self._clock.now(), None)
        run_id, state, owner, attempt, expires_at, now = rows[0]
        return task_fence_error(lease, now, (run_id, state, owner, attempt, expires_at))

    async def get_task(self, run_id: str, command: str) -> TaskRecord | None:
        rows = await self._fetch("get_task", {"run_id": run_id, "command": command})
        return _sql.task_record(rows[0]) if rows else None
