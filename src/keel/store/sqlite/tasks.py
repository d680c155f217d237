"""Steps dispatched to named queues on SQLite (:class:`keel.store.ports.TaskQueues`).

Tasks are inserted by :meth:`SQLiteRuns.commit <keel.store.sqlite.runs.SQLiteRuns.commit>`
with the journal write that records them; here they are claimed, renewed and
ended under task leases.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Sequence
from typing import Any

from keel.errors import StoreError
from keel.store._checks import (
    check_claim_limit,
    check_queue_limit,
    check_queues,
    check_ttl,
    task_fence_error,
)
from keel.store.base import QueueInfo, TaskLease, TaskRecord
from keel.store.sqlite._db import Capability
from keel.store.sqlite._rows import queue_info, task_record
from keel.store.sqlite._sql import Q


class SQLiteTasks(Capability):
    """:class:`~keel.store.ports.TaskQueues` of :class:`~keel.store.sqlite.store.SQLiteStore`."""

    async def claim(
        self, owner: str, queues: Collection[str], *, limit: int, ttl: float
    ) -> list[tuple[TaskLease, TaskRecord]]:
        check_claim_limit(limit)
        check_ttl(ttl)
        names = json.dumps(check_queues(queues))

        def candidates(conn: sqlite3.Connection) -> bool:
            params = {"now": self._db.clock(), "queues": names}
            return bool(conn.execute(Q["task_candidates"], params).fetchone()["found"])

        # As runs are claimed: an idle claim never takes the file's write lock.
        if not await self._db.read(candidates):
            return []

        def op(conn: sqlite3.Connection) -> tuple[list[tuple[TaskLease, TaskRecord]], bool]:
            now = self._db.clock()
            swept = conn.execute(Q["sweep_tasks"], {"now": now}).fetchall()
            for row in swept:
                if row["state"] == "failed":
                    conn.execute(Q["wake_for_task"], {"now": now, "run_id": row["run_id"]})
            expires = now + ttl
            params = {
                "owner": owner,
                "expires_at": expires,
                "now": now,
                "queues": names,
                "limit": limit,
            }
            tasks = task_record.all(conn.execute(Q["claim_tasks"], params))
            tasks.sort(key=lambda t: (-t.priority, t.available_at, t.task_id))
            return [(TaskLease(t.task_id, owner, t.attempt, expires), t) for t in tasks], bool(
                swept
            )

        claimed, swept = await self._db.write(op)
        if swept:  # tasks available again, or runs woken by failed ones
            self._db.waiters.notify()
        return claimed

    async def renew(self, owner: str, leases: Sequence[TaskLease], ttl: float) -> frozenset[int]:
        check_ttl(ttl)
        self._db.check_open()
        mine = [lease for lease in leases if lease.owner == owner]
        if not mine:
            return frozenset(lease.task_id for lease in leases)

        def op(conn: sqlite3.Connection) -> set[int]:
            now = self._db.clock()
            return {
                lease.task_id
                for lease in mine
                if conn.execute(
                    Q["renew_task_lease"], _fence(lease, now) | {"expires_at": now + ttl}
                ).fetchone()
            }

        renewed = await self._db.write(op)
        return frozenset(lease.task_id for lease in leases) - renewed

    async def complete(self, lease: TaskLease, result: bytes) -> None:
        await self._end(lease, "complete_task", {"result": result})

    async def fail(self, lease: TaskLease, error: bytes, retry_at: float | None) -> None:
        await self._end(lease, "fail_task", {"error": error, "retry_at": retry_at})

    async def _end(self, lease: TaskLease, query: str, params: dict[str, Any]) -> None:
        """Fenced by the task lease: ``query`` ends the attempt; a task done for good
        (completed, or failed with no retry) wakes its run."""

        def op(conn: sqlite3.Connection) -> None:
            now = self._db.clock()
            row = conn.execute(Q[query], _fence(lease, now) | params).fetchone()
            if row is None:
                why = conn.execute(Q["task_fence_row"], (lease.task_id,)).fetchone()
                raise _fence_error(lease, now, why)
            if row["state"] != "available":  # not retried
                conn.execute(Q["wake_for_task"], {"now": now, "run_id": row["run_id"]})

        await self._db.write(op, notify=True)

    async def get(self, run_id: str, command: str) -> TaskRecord | None:
        return await self._db.read_one(Q["get_task"], (run_id, command), task_record)

    async def set_limit(self, queue: str, concurrency: int | None) -> None:
        check_queue_limit(queue, concurrency)
        params: dict[str, object]
        if concurrency is None:
            query, params = Q["clear_queue_limit"], {"queue": queue}
        else:
            query, params = Q["set_queue_limit"], {"queue": queue, "concurrency": concurrency}
        # Notify: a raised limit lets waiting claimers take more at once.
        await self._db.write(lambda conn: conn.execute(query, params).close(), notify=True)

    async def list_queues(self) -> list[QueueInfo]:
        return await self._db.read_all(Q["list_queues"], (), queue_info)


def _fence(lease: TaskLease, now: float) -> dict[str, Any]:
    return {"task_id": lease.task_id, "owner": lease.owner, "attempt": lease.attempt, "now": now}


def _fence_error(lease: TaskLease, now: float, row: sqlite3.Row | None) -> StoreError:
    """Why a fenced task write matched no row (``row``: the task's ``task_fence_row``)."""
    if row is None:
        return task_fence_error(lease, now, None)
    found = (
        row["run_id"],
        row["state"],
        row["lease_owner"],
        row["attempt"],
        row["lease_expires_at"],
    )
    return task_fence_error(lease, now, found)
