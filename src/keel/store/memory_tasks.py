"""The in-memory store's dispatched steps (tasks): a mixin of :class:`MemoryStore`.

Same rules as the rest of the store: each method does its work under the
store's lock without awaiting.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING

from keel.core.states import RunState
from keel.store._checks import (
    check_claim_limit,
    check_queue_limit,
    check_queues,
    check_tasks,
    check_ttl,
    duplicate_task,
    lease_expired_error,
    task_fence_error,
)
from keel.store.base import (
    Lease,
    NewEvent,
    NewTask,
    QueueInfo,
    RunRecord,
    TaskLease,
    TaskRecord,
)

#: Expired task leases swept per claim, as the SQL stores do.
SWEEP_BATCH = 500


class MemoryTasks:
    """The task methods of :class:`~keel.store.memory.MemoryStore`, which sets the state."""

    _lock: threading.RLock
    _clock: Callable[[], float]
    _runs: dict[str, RunRecord]
    _tasks: dict[int, TaskRecord]
    _task_ids: dict[tuple[str, str], int]  # (run id, command) -> task id
    _last_task_id: int
    _queue_limits: dict[str, int]

    if TYPE_CHECKING:  # defined by MemoryStore

        def _check_open(self) -> None: ...
        def _notify(self) -> None: ...
        def _fence(self, lease: Lease, first_seq: int, now: float) -> RunRecord: ...
        def _append(
            self, run_id: str, first_seq: int, events: Sequence[NewEvent], now: float
        ) -> None: ...

    def _drop_open_tasks(self, run_id: str) -> None:
        """The run ended: its queued and leased dispatched steps are discarded, so
        nothing is left to claim and a task worker's heartbeat finds its lease gone."""
        for key in [k for k in self._task_ids if k[0] == run_id]:
            task = self._tasks[self._task_ids[key]]
            if task.state in ("available", "leased"):
                del self._tasks[task.task_id]
                del self._task_ids[key]

    async def dispatch_tasks(
        self,
        lease: Lease,
        first_seq: int,
        events: Sequence[NewEvent],
        tasks: Sequence[NewTask],
    ) -> list[int]:
        check_tasks(lease.run_id, tasks)
        with self._lock:
            self._check_open()
            now = self._clock()
            run = self._fence(lease, first_seq, now)
            taken = [t.command for t in tasks if (run.run_id, t.command) in self._task_ids]
            if taken:
                raise duplicate_task(run.run_id, taken)
            self._append(run.run_id, first_seq, events, now)
            self._runs[run.run_id] = dataclasses.replace(
                run, next_seq=first_seq + len(events), updated_at=now
            )
            ids = []
            for t in tasks:
                self._last_task_id += 1
                task_id = self._last_task_id
                self._tasks[task_id] = TaskRecord(
                    task_id=task_id,
                    run_id=run.run_id,
                    command=t.command,
                    step=t.step,
                    queue=t.queue,
                    priority=t.priority,
                    args=t.args,
                    attempt=1,
                    max_attempts=t.max_attempts,
                    state="available",
                    available_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                    result=None,
                    error=None,
                    created_at=now,
                )
                self._task_ids[(run.run_id, t.command)] = task_id
                ids.append(task_id)
            self._notify()
            return ids

    async def claim_tasks(
        self, owner: str, queues: Collection[str], *, limit: int, ttl: float
    ) -> list[tuple[TaskLease, TaskRecord]]:
        check_claim_limit(limit)
        check_ttl(ttl)
        names = frozenset(check_queues(queues))
        with self._lock:
            self._check_open()
            now = self._clock()
            changed = self._sweep_tasks(now)
            due = sorted(
                (
                    t
                    for t in self._tasks.values()
                    if t.state == "available" and t.available_at <= now and t.queue in names
                ),
                key=lambda t: (-t.priority, t.available_at, t.task_id),
            )
            room = self._queue_room(names)
            claimed: list[tuple[TaskLease, TaskRecord]] = []
            for t in due:
                if len(claimed) == limit:
                    break
                if t.queue in room:
                    if room[t.queue] <= 0:
                        continue
                    room[t.queue] -= 1
                task = dataclasses.replace(
                    t, state="leased", lease_owner=owner, lease_expires_at=now + ttl
                )
                self._tasks[t.task_id] = task
                claimed.append((TaskLease(t.task_id, owner, t.attempt, now + ttl), task))
            if changed:
                self._notify()
            return claimed

    def _queue_room(self, names: Collection[str]) -> dict[str, int]:
        """Tasks each capped queue of ``names`` may still lease."""
        room = {q: self._queue_limits[q] for q in names if q in self._queue_limits}
        for t in self._tasks.values():
            if t.state == "leased" and t.queue in room:
                room[t.queue] -= 1
        return room

    async def set_queue_limit(self, queue: str, concurrency: int | None) -> None:
        check_queue_limit(queue, concurrency)
        with self._lock:
            self._check_open()
            if concurrency is None:
                self._queue_limits.pop(queue, None)
            else:
                self._queue_limits[queue] = concurrency
            self._notify()  # a raised limit lets waiting claimers take more

    async def list_queues(self) -> list[QueueInfo]:
        with self._lock:
            self._check_open()
            counts: dict[str, list[int]] = {q: [0, 0] for q in self._queue_limits}
            for t in self._tasks.values():
                if t.state in ("available", "leased"):
                    counts.setdefault(t.queue, [0, 0])[t.state == "leased"] += 1
            return [
                QueueInfo(q, self._queue_limits.get(q), available, leased)
                for q, (available, leased) in sorted(counts.items())
            ]

    def _sweep_tasks(self, now: float) -> bool:
        """Expired task leases consume their attempt; return whether any did."""
        expired = sorted(
            (
                t
                for t in self._tasks.values()
                if t.state == "leased"
                and t.lease_expires_at is not None
                and t.lease_expires_at < now
            ),
            key=lambda t: t.lease_expires_at or 0.0,
        )[:SWEEP_BATCH]
        for t in expired:
            final = t.attempt + 1 > t.max_attempts
            self._tasks[t.task_id] = dataclasses.replace(
                t,
                state="failed" if final else "available",
                attempt=t.attempt if final else t.attempt + 1,
                available_at=t.available_at if final else now,
                lease_owner=None,
                lease_expires_at=None,
                error=lease_expired_error(t.attempt, final=final),
            )
            if final:
                self._wake_run(t.run_id, now)
        return bool(expired)

    def _wake_run(self, run_id: str, now: float) -> None:
        """Commit before wake: a pending/suspended run is due now."""
        run = self._runs.get(run_id)
        if run is not None and run.state in (RunState.PENDING, RunState.SUSPENDED):
            wake = now if run.wake_at is None else min(run.wake_at, now)
            self._runs[run_id] = dataclasses.replace(run, wake_at=wake, updated_at=now)

    async def renew_task_leases(
        self, owner: str, leases: Sequence[TaskLease], ttl: float
    ) -> frozenset[int]:
        check_ttl(ttl)
        with self._lock:
            self._check_open()
            now = self._clock()
            lost: set[int] = set()
            for lease in leases:
                task = self._tasks.get(lease.task_id)
                if task is None or lease.owner != owner or not _holds_task(task, lease, now):
                    lost.add(lease.task_id)
                    continue
                self._tasks[task.task_id] = dataclasses.replace(task, lease_expires_at=now + ttl)
            return frozenset(lost)

    def _task_done(self, run_id: str, commands: frozenset[str]) -> bool:
        """Whether a task of one of ``commands`` of the run has finished."""
        return bool(commands) and any(
            t.run_id == run_id and t.command in commands and t.state in ("completed", "failed")
            for t in self._tasks.values()
        )

    def _task_fence(self, lease: TaskLease, now: float) -> TaskRecord:
        task = self._tasks.get(lease.task_id)
        if task is None or not _holds_task(task, lease, now):
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

    async def complete_task(self, lease: TaskLease, result: bytes) -> None:
        with self._lock:
            self._check_open()
            now = self._clock()
            task = self._task_fence(lease, now)
            self._tasks[task.task_id] = dataclasses.replace(
                task, state="completed", result=result, lease_owner=None, lease_expires_at=None
            )
            self._wake_run(task.run_id, now)
            self._notify()

    async def fail_task(self, lease: TaskLease, error: bytes, retry_at: float | None) -> None:
        with self._lock:
            self._check_open()
            now = self._clock()
            task = self._task_fence(lease, now)
            retry = retry_at is not None and task.attempt < task.max_attempts
            self._tasks[task.task_id] = dataclasses.replace(
                task,
                state="available" if retry else "failed",
                attempt=task.attempt + 1 if retry else task.attempt,
                available_at=retry_at if retry_at is not None and retry else task.available_at,
                error=error,
                lease_owner=None,
                lease_expires_at=None,
            )
            if not retry:
                self._wake_run(task.run_id, now)
            self._notify()

    async def get_task(self, run_id: str, command: str) -> TaskRecord | None:
        with self._lock:
            self._check_open()
            task_id = self._task_ids.get((run_id, command))
            return None if task_id is None else self._tasks[task_id]


def _holds_task(task: TaskRecord, lease: TaskLease, now: float) -> bool:
    """Whether ``lease`` is the task's live lease at ``now``."""
    return (
        task.state == "leased"
        and task.lease_owner == lease.owner
        and task.attempt == lease.attempt
        and task.lease_expires_at is not None
        and task.lease_expires_at >= now
    )
