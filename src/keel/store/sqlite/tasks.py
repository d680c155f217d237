"""The SQLite store's dispatched steps (tasks): a mixin of :class:`SQLiteStore`."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from keel.errors import StoreError
from keel.store._checks import (
    check_claim_limit,
    check_queue_limit,
    check_queues,
    check_tasks,
    check_ttl,
    duplicate_task,
    task_fence_error,
)
from keel.store.base import Lease, NewEvent, NewTask, QueueInfo, TaskLease, TaskRecord
from keel.store.sqlite import _sql
from keel.store.sqlite._fence import fence_params, fenced
from keel.store.sqlite._threads import ChangeWaiters, DbThread

T = TypeVar("T")
Q = _sql.queries()


class SQLiteTasks:
    """The task methods of :class:`~keel.store.sqlite.store.SQLiteStore`, which sets the state."""

    _clock: Callable[[], float]
    _writer: DbThread | None
    _waiters: ChangeWaiters

    if TYPE_CHECKING:  # defined by SQLiteStore

        async def _write(
            self,
            op: Callable[[sqlite3.Connection], T],
            *,
            notify: bool = False,
            work: bool = True,
        ) -> T: ...
        async def _read(self, op: Callable[[sqlite3.Connection], T]) -> T: ...

    async def dispatch_tasks(
        self,
        lease: Lease,
        first_seq: int,
        events: Sequence[NewEvent],
        tasks: Sequence[NewTask],
    ) -> list[int]:
        check_tasks(lease.run_id, tasks)
        events, tasks = tuple(events), tuple(tasks)

        def op(conn: sqlite3.Connection) -> list[int]:
            # The fenced append and the task rows in one transaction: a failure
            # of either (a lost lease, a duplicate task) rolls back both.
            now = self._clock()
            params = fence_params(lease, first_seq, len(events), now)
            fenced(conn, Q["fenced_append"], params, lease, first_seq, events, now)
            ids = []
            for t in tasks:
                try:
                    [(task_id,)] = conn.execute(
                        Q["insert_task"],
                        {
                            "run_id": lease.run_id,
                            "command": t.command,
                            "step": t.step,
                            "queue": t.queue,
                            "priority": t.priority,
                            "args": t.args,
                            "max_attempts": t.max_attempts,
                            "now": now,
                        },
                    ).fetchall()
                except sqlite3.IntegrityError as exc:
                    raise duplicate_task(lease.run_id, [t.command]) from exc
                ids.append(task_id)
            return ids

        return await self._write(op, notify=bool(tasks))

    async def claim_tasks(
        self, owner: str, queues: Collection[str], *, limit: int, ttl: float
    ) -> list[tuple[TaskLease, TaskRecord]]:
        check_claim_limit(limit)
        check_ttl(ttl)
        names = json.dumps(check_queues(queues))

        def candidates(conn: sqlite3.Connection) -> bool:
            row = conn.execute(Q["task_candidates"], {"now": self._clock(), "queues": names})
            return bool(row.fetchone()[0])

        # As claim_runs: an idle claim never takes the file's write lock.
        if not await self._read(candidates):
            return []

        def op(conn: sqlite3.Connection) -> tuple[list[tuple[TaskLease, TaskRecord]], bool]:
            now = self._clock()
            swept = conn.execute(Q["sweep_tasks"], {"now": now}).fetchall()
            for run_id, state in swept:
                if state == "failed":
                    conn.execute(Q["wake_for_task"], {"now": now, "run_id": run_id})
            expires = now + ttl
            params = {
                "owner": owner,
                "expires_at": expires,
                "now": now,
                "queues": names,
                "limit": limit,
            }
            records = [_sql.task_record(r) for r in conn.execute(Q["claim_tasks"], params)]
            records.sort(key=lambda t: (-t.priority, t.available_at, t.task_id))
            claimed = [(TaskLease(t.task_id, owner, t.attempt, expires), t) for t in records]
            return claimed, bool(swept)

        claimed, swept = await self._write(op)
        if swept:  # tasks available again, or runs woken by failed ones
            self._waiters.notify()
        return claimed

    async def set_queue_limit(self, queue: str, concurrency: int | None) -> None:
        check_queue_limit(queue, concurrency)

        def op(conn: sqlite3.Connection) -> None:
            if concurrency is None:
                conn.execute(Q["clear_queue_limit"], {"queue": queue})
            else:
                conn.execute(Q["set_queue_limit"], {"queue": queue, "concurrency": concurrency})

        # Notify: a raised limit lets waiting claimers take more at once.
        await self._write(op, notify=True)

    async def list_queues(self) -> list[QueueInfo]:
        def op(conn: sqlite3.Connection) -> list[QueueInfo]:
            return [QueueInfo(*row) for row in conn.execute(Q["list_queues"])]

        return await self._read(op)

    async def renew_task_leases(
        self, owner: str, leases: Sequence[TaskLease], ttl: float
    ) -> frozenset[int]:
        check_ttl(ttl)
        if self._writer is None:
            raise StoreError(f"{self!r} is not open")
        mine = [lease for lease in leases if lease.owner == owner]
        if not mine:
            return frozenset(lease.task_id for lease in leases)

        def op(conn: sqlite3.Connection) -> set[int]:
            now = self._clock()
            renewed: set[int] = set()
            for lease in mine:
                params = {
                    "expires_at": now + ttl,
                    "task_id": lease.task_id,
                    "owner": owner,
                    "attempt": lease.attempt,
                    "now": now,
                }
                if conn.execute(Q["renew_task_lease"], params).fetchall():
                    renewed.add(lease.task_id)
            return renewed

        renewed = await self._write(op)
        return frozenset(lease.task_id for lease in leases) - renewed

    def _task_fence(self, lease: TaskLease, now: float) -> dict[str, Any]:
        return {
            "task_id": lease.task_id,
            "owner": lease.owner,
            "attempt": lease.attempt,
            "now": now,
        }

    async def complete_task(self, lease: TaskLease, result: bytes) -> None:
        def op(conn: sqlite3.Connection) -> None:
            now = self._clock()
            params = self._task_fence(lease, now) | {"result": result}
            rows = conn.execute(Q["complete_task"], params).fetchall()
            if not rows:
                raise _task_fence_error(conn, lease, now)
            conn.execute(Q["wake_for_task"], {"now": now, "run_id": rows[0][0]})

        await self._write(op, notify=True)

    async def fail_task(self, lease: TaskLease, error: bytes, retry_at: float | None) -> None:
        def op(conn: sqlite3.Connection) -> None:
            now = self._clock()
            params = self._task_fence(lease, now) | {"error": error, "retry_at": retry_at}
            rows = conn.execute(Q["fail_task"], params).fetchall()
            if not rows:
                raise _task_fence_error(conn, lease, now)
            run_id, state = rows[0]
            if state == "failed":
                conn.execute(Q["wake_for_task"], {"now": now, "run_id": run_id})

        await self._write(op, notify=True)

    async def get_task(self, run_id: str, command: str) -> TaskRecord | None:
        def op(conn: sqlite3.Connection) -> TaskRecord | None:
            row = conn.execute(Q["get_task"], (run_id, command)).fetchone()
            return None if row is None else _sql.task_record(row)

        return await self._read(op)


def _task_fence_error(conn: sqlite3.Connection, lease: TaskLease, now: float) -> StoreError:
    """Why a fenced task write matched no row."""
    row = conn.execute(Q["task_fence_row"], (lease.task_id,)).fetchone()
    return task_fence_error(lease, now, None if row is None else tuple(row))
