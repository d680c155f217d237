"""The in-memory store's dispatched steps and their queues
(:class:`~keel.store.ports.TaskQueues`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence

from keel.store._checks import (
    check_claim_limit,
    check_queue_limit,
    check_queues,
    check_ttl,
    duplicate_task,
    lease_expired_error,
    task_fence_error,
)
from keel.store.base import NewTask, QueueInfo, TaskLease, TaskRecord
from keel.store.memory.tables import OPEN_TASK_STATES, Tables

#: Expired task leases swept per claim, as the SQL stores do.
SWEEP_BATCH = 500


class MemoryTasks:
    """Tasks and queue limits, over the store's :class:`Tables`."""

    def __init__(self, tables: Tables) -> None:
        self._t = tables

    async def claim(
        self, owner: str, queues: Collection[str], *, limit: int, ttl: float
    ) -> list[tuple[TaskLease, TaskRecord]]:
        check_claim_limit(limit)
        check_ttl(ttl)
        names = frozenset(check_queues(queues))
        t = self._t
        with t.transaction() as now:
            changed = self._sweep(now)
            ready = sorted(
                (
                    task
                    for task in t.tasks.values()
                    if task.state == "available"
                    and task.available_at <= now
                    and task.queue in names
                ),
                key=lambda task: (-task.priority, task.available_at, task.task_id),
            )
            room = self._room(names)
            claimed: list[tuple[TaskLease, TaskRecord]] = []
            for task in ready:
                if len(claimed) == limit:
                    break
                if task.queue in room:
                    if room[task.queue] <= 0:
                        continue
                    room[task.queue] -= 1
                leased = dataclasses.replace(
                    task, state="leased", lease_owner=owner, lease_expires_at=now + ttl
                )
                t.tasks[task.task_id] = leased
                claimed.append((TaskLease(task.task_id, owner, task.attempt, now + ttl), leased))
            if changed:
                t.notify()
            return claimed

    async def renew(self, owner: str, leases: Sequence[TaskLease], ttl: float) -> frozenset[int]:
        check_ttl(ttl)
        with self._t.transaction() as now:
            held = [
                task
                for lease in leases
                if (task := self._t.tasks.get(lease.task_id)) is not None
                and lease.owner == owner
                and _holds(task, lease, now)
            ]
            for task in held:
                self._t.tasks[task.task_id] = dataclasses.replace(task, lease_expires_at=now + ttl)
            return frozenset(lease.task_id for lease in leases) - {t.task_id for t in held}

    async def complete(self, lease: TaskLease, result: bytes) -> None:
        with self._t.transaction() as now:
            task = self._fence(lease, now)
            self._t.tasks[task.task_id] = dataclasses.replace(
                task, state="completed", result=result, lease_owner=None, lease_expires_at=None
            )
            self._t.wake(task.run_id, now)
            self._t.notify()

    async def fail(self, lease: TaskLease, error: bytes, retry_at: float | None) -> None:
        with self._t.transaction() as now:
            task = self._fence(lease, now)
            retry = retry_at is not None and task.attempt < task.max_attempts
            self._t.tasks[task.task_id] = dataclasses.replace(
                task,
                state="available" if retry else "failed",
                attempt=task.attempt + 1 if retry else task.attempt,
                available_at=retry_at if retry_at is not None and retry else task.available_at,
                error=error,
                lease_owner=None,
                lease_expires_at=None,
            )
            if not retry:
                self._t.wake(task.run_id, now)
            self._t.notify()

    async def get(self, run_id: str, command: str) -> TaskRecord | None:
        with self._t.transaction():
            task_id = self._t.task_ids.get((run_id, command))
            return None if task_id is None else self._t.tasks[task_id]

    async def set_limit(self, queue: str, concurrency: int | None) -> None:
        check_queue_limit(queue, concurrency)
        with self._t.transaction():
            if concurrency is None:
                self._t.queue_limits.pop(queue, None)
            else:
                self._t.queue_limits[queue] = concurrency
            self._t.notify()  # a raised limit lets waiting claimers take more

    async def list_queues(self) -> list[QueueInfo]:
        with self._t.transaction():
            counts: dict[str, list[int]] = {q: [0, 0] for q in self._t.queue_limits}
            for task in self._t.tasks.values():
                if task.state in OPEN_TASK_STATES:
                    counts.setdefault(task.queue, [0, 0])[task.state == "leased"] += 1
            return [
                QueueInfo(q, self._t.queue_limits.get(q), available, leased)
                for q, (available, leased) in sorted(counts.items())
            ]

    def _room(self, names: Collection[str]) -> dict[str, int]:
        """Tasks each capped queue of ``names`` may still lease."""
        room = {q: self._t.queue_limits[q] for q in names if q in self._t.queue_limits}
        for task in self._t.tasks.values():
            if task.state == "leased" and task.queue in room:
                room[task.queue] -= 1
        return room

    def _sweep(self, now: float) -> bool:
        """Expired task leases consume their attempt; return whether any did."""
        expired = sorted(
            (
                task
                for task in self._t.tasks.values()
                if task.state == "leased"
                and task.lease_expires_at is not None
                and task.lease_expires_at < now
            ),
            key=lambda task: task.lease_expires_at or 0.0,
        )[:SWEEP_BATCH]
        for task in expired:
            final = task.attempt + 1 > task.max_attempts
            self._t.tasks[task.task_id] = dataclasses.replace(
                task,
                state="failed" if final else "available",
                attempt=task.attempt if final else task.attempt + 1,
                available_at=task.available_at if final else now,
                lease_owner=None,
                lease_expires_at=None,
                error=lease_expired_error(task.attempt, final=final),
            )
            if final:
                self._t.wake(task.run_id, now)
        return bool(expired)

    def _fence(self, lease: TaskLease, now: float) -> TaskRecord:
        task = self._t.tasks.get(lease.task_id)
        if task is None or not _holds(task, lease, now):
            row = None
            if task is not None:
                row = (
                    task.run_id,
                    task.state,
                    task.lease_owner,
                    task.attempt,
                    task.lease_expires_at,
                )
            raise task_fence_error(lease, now, row)
        return task


# -- the tasks part of a run's commit (the caller is in a transaction) -----------------


def tasks_taken(tables: Tables, run_id: str, tasks: Sequence[NewTask]) -> None:
    """Refuse tasks for commands the run has dispatched before (a pair has one task)."""
    taken = [task.command for task in tasks if (run_id, task.command) in tables.task_ids]
    if taken:
        raise duplicate_task(run_id, taken)


def insert_tasks(tables: Tables, run_id: str, tasks: Sequence[NewTask], now: float) -> list[int]:
    """Insert ``tasks`` available now at attempt 1; return their new ids, in order."""
    ids = []
    for new in tasks:
        tables.last_task_id += 1
        task_id = tables.last_task_id
        tables.tasks[task_id] = TaskRecord(
            task_id=task_id,
            run_id=run_id,
            command=new.command,
            step=new.step,
            queue=new.queue,
            priority=new.priority,
            args=new.args,
            attempt=1,
            max_attempts=new.max_attempts,
            state="available",
            available_at=now,
            lease_owner=None,
            lease_expires_at=None,
            result=None,
            error=None,
            created_at=now,
        )
        tables.task_ids[(run_id, new.command)] = task_id
        ids.append(task_id)
    return ids


def tasks_done(tables: Tables, run_id: str, commands: frozenset[str]) -> bool:
    """Whether a task of one of ``commands`` of the run has finished."""
    return bool(commands) and any(
        task.run_id == run_id and task.command in commands and task.state in ("completed", "failed")
        for task in tables.tasks.values()
    )


def _holds(task: TaskRecord, lease: TaskLease, now: float) -> bool:
    """Whether ``lease`` is the task's live lease at ``now``."""
    return (
        task.state == "leased"
        and task.lease_owner == lease.owner
        and task.attempt == lease.attempt
        and task.lease_expires_at is not None
        and task.lease_expires_at >= now
    )
