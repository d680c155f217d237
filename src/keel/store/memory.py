"""In-memory store: the same semantics as the database backends, for tests.

State lives in this object only (nothing survives the process). Every method
does its work without awaiting, so each call is atomic for asyncio; a lock
also makes it safe to share between event loops on different threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from keel.core.states import RunState
from keel.errors import (
    ConfigurationError,
    LeaseLostError,
    RunFinishedError,
    RunNotFoundError,
    StoreError,
)
from keel.store._checks import (
    MAX_PAGE,
    check_claim_limit,
    check_queues,
    check_tasks,
    check_ttl,
    decode_cursor,
    duplicate_task,
    encode_cursor,
    lease_expired_error,
    task_fence_error,
)
from keel.store.base import (
    Claimed,
    EventRecord,
    Lease,
    NewEvent,
    NewRun,
    NewTask,
    RenewOutcome,
    RunPage,
    RunRecord,
    SignalRecord,
    TaskLease,
    TaskRecord,
)


@dataclass(slots=True)
class _Signal:
    record: SignalRecord
    consumed_seq: int | None = None


class MemoryStore:
    """A store in a Python dict. ``clock`` is the store's clock (default ``time.time``)."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.url = "memory://"
        self._clock = clock
        self._open = False
        self._lock = threading.RLock()
        self._runs: dict[str, RunRecord] = {}
        self._events: dict[str, list[EventRecord]] = {}
        self._signals: dict[int, _Signal] = {}
        self._idempotent: dict[tuple[str, str], bytes] = {}
        self._mailbox: dict[str, list[int]] = {}  # run id -> its signal ids, oldest first
        self._last_signal_id = 0
        self._tasks: dict[int, TaskRecord] = {}
        self._task_ids: dict[tuple[str, str], int] = {}  # (run id, command) -> task id
        self._last_task_id = 0
        self._waiters: dict[asyncio.Future[None], asyncio.AbstractEventLoop] = {}

    def __repr__(self) -> str:
        return f"MemoryStore(runs={len(self._runs)})"

    async def open(self) -> None:
        self._open = True

    async def close(self) -> None:
        # The data stays: reopening this object is like reopening a database file.
        self._open = False
        self._notify()

    async def now(self) -> float:
        return self._clock()

    def _check_open(self) -> None:
        if not self._open:
            raise StoreError(f"{self!r} is not open")

    def _notify(self) -> None:
        """Wake every ``wait_for_change`` caller (after a write)."""
        waiters, self._waiters = self._waiters, {}
        for fut, loop in waiters.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed
                loop.call_soon_threadsafe(_wake, fut)

    def _append(self, run_id: str, first_seq: int, events: Sequence[NewEvent], now: float) -> None:
        journal = self._events[run_id]
        for i, e in enumerate(events):
            journal.append(EventRecord(run_id, first_seq + i, e.type, e.command, e.data, now))

    # -- runs ----------------------------------------------------------------------

    async def create_run(
        self, run: NewRun, *, lease_owner: str | None = None, lease_ttl: float = 30.0
    ) -> tuple[RunRecord, Lease | None, bool]:
        if lease_owner is not None:
            check_ttl(lease_ttl)
        with self._lock:
            self._check_open()
            existing = self._runs.get(run.run_id)
            if existing is not None:
                return existing, None, False
            now = self._clock()
            lease = None
            if lease_owner is not None:
                lease = Lease(run.run_id, lease_owner, 1, now + lease_ttl)
            record = RunRecord(
                run_id=run.run_id,
                workflow=run.workflow,
                version=run.version,
                state=RunState.PENDING if lease is None else RunState.RUNNING,
                input=run.input,
                result=None,
                error=None,
                created_at=now,
                updated_at=now,
                wake_at=now if lease is None else None,
                lease_owner=lease_owner,
                lease_token=0 if lease is None else 1,
                lease_expires_at=None if lease is None else lease.expires_at,
                cancel_requested=False,
                next_seq=1,
            )
            self._runs[run.run_id] = record
            self._events[run.run_id] = []
            self._mailbox[run.run_id] = []
            self._append(run.run_id, 0, [run.started], now)
            self._notify()
            return record, lease, True

    async def get_run(self, run_id: str) -> RunRecord | None:
        with self._lock:
            self._check_open()
            return self._runs.get(run_id)

    async def list_runs(
        self,
        *,
        workflow: str | None = None,
        state: RunState | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RunPage:
        if not 1 <= limit <= MAX_PAGE:
            raise ConfigurationError(
                f"list_runs limit must be between 1 and {MAX_PAGE}, not {limit!r}"
            )
        before = decode_cursor(cursor) if cursor else None
        with self._lock:
            self._check_open()
            runs = [
                r
                for r in self._runs.values()
                if (workflow is None or r.workflow == workflow)
                and (state is None or r.state == state)
                and (before is None or (r.created_at, r.run_id) < before)
            ]
        runs.sort(key=lambda r: (r.created_at, r.run_id), reverse=True)
        if len(runs) > limit:
            return RunPage(runs[:limit], encode_cursor(runs[limit - 1]))
        return RunPage(runs, None)

    async def load_events(self, run_id: str, *, after_seq: int = -1) -> list[EventRecord]:
        with self._lock:
            self._check_open()
            return [e for e in self._events.get(run_id, ()) if e.seq > after_seq]

    # -- leases --------------------------------------------------------------------

    async def claim_runs(self, owner: str, *, limit: int, ttl: float) -> list[Claimed]:
        if limit < 1:
            raise ValueError(f"claim limit must be at least 1, not {limit}")
        check_ttl(ttl)
        with self._lock:
            self._check_open()
            now = self._clock()
            due: list[tuple[float, str]] = []
            for r in self._runs.values():
                if r.state in (RunState.PENDING, RunState.SUSPENDED):
                    if r.wake_at is not None and r.wake_at <= now:
                        due.append((r.wake_at, r.run_id))
                elif (
                    r.state is RunState.RUNNING
                    and r.lease_expires_at is not None
                    and r.lease_expires_at < now
                ):
                    due.append((r.lease_expires_at, r.run_id))
            due.sort()
            claimed = []
            for _, run_id in due[:limit]:
                run = dataclasses.replace(
                    self._runs[run_id],
                    state=RunState.RUNNING,
                    lease_owner=owner,
                    lease_token=self._runs[run_id].lease_token + 1,
                    lease_expires_at=now + ttl,
                    wake_at=None,
                    updated_at=now,
                )
                self._runs[run_id] = run
                claimed.append(Claimed(Lease(run_id, owner, run.lease_token, now + ttl), run))
            if claimed:
                self._notify()
            return claimed

    async def renew_leases(self, owner: str, leases: Sequence[Lease], ttl: float) -> RenewOutcome:
        check_ttl(ttl)
        with self._lock:
            self._check_open()
            now = self._clock()
            expires = now + ttl
            lost: set[str] = set()
            cancel: set[str] = set()
            for lease in leases:
                run = self._runs.get(lease.run_id)
                if run is None or lease.owner != owner or not _holds(run, lease, now):
                    lost.add(lease.run_id)
                    continue
                self._runs[run.run_id] = dataclasses.replace(run, lease_expires_at=expires)
                if run.cancel_requested:
                    cancel.add(run.run_id)
            return RenewOutcome(expires, frozenset(lost), frozenset(cancel))

    # -- fenced journal writes -------------------------------------------------------

    def _fence(self, lease: Lease, first_seq: int, now: float) -> RunRecord:
        """The run row if ``lease`` holds it and the journal continues at ``first_seq``."""
        run = self._runs.get(lease.run_id)
        if run is None:
            raise LeaseLostError(lease.run_id, lease.token, "the run does not exist")
        if run.state is not RunState.RUNNING:
            raise LeaseLostError(lease.run_id, lease.token, f"the run is {run.state.value}")
        if run.lease_owner != lease.owner or run.lease_token != lease.token:
            raise LeaseLostError(
                lease.run_id,
                lease.token,
                f"the run is now leased to {run.lease_owner!r} with token {run.lease_token}",
            )
        if not _holds(run, lease, now):
            raise LeaseLostError(lease.run_id, lease.token, "the lease expired")
        if run.next_seq != first_seq:
            raise StoreError(
                f"journal of run {lease.run_id!r} continues at seq {run.next_seq}, "
                f"but the write starts at seq {first_seq}"
            )
        return run

    async def append_events(
        self,
        lease: Lease,
        first_seq: int,
        events: Sequence[NewEvent],
        *,
        consume_signal: int | None = None,
    ) -> None:
        with self._lock:
            self._check_open()
            now = self._clock()
            run = self._fence(lease, first_seq, now)
            signal = None
            if consume_signal is not None:
                signal = self._signals.get(consume_signal)
                if (
                    signal is None
                    or signal.record.run_id != lease.run_id
                    or signal.consumed_seq is not None
                ):
                    raise StoreError(
                        f"signal {consume_signal} is not an unconsumed signal of run "
                        f"{lease.run_id!r}"
                    )
                signal.consumed_seq = first_seq
            self._append(run.run_id, first_seq, events, now)
            self._runs[run.run_id] = dataclasses.replace(
                run, next_seq=first_seq + len(events), updated_at=now
            )
            self._notify()

    async def suspend_run(
        self,
        lease: Lease,
        first_seq: int,
        events: Sequence[NewEvent],
        *,
        wake_at: float | None,
        wake_on_signals: Collection[str] = (),
        wake_on_tasks: Collection[str] = (),
    ) -> None:
        names = frozenset(wake_on_signals)
        commands = frozenset(wake_on_tasks)
        with self._lock:
            self._check_open()
            now = self._clock()
            run = self._fence(lease, first_seq, now)
            # No lost wake-up: a signal it waits for may already be in the mailbox.
            waiting = any(
                self._signals[i].consumed_seq is None and self._signals[i].record.name in names
                for i in self._mailbox[run.run_id]
            )
            waiting = waiting or self._task_done(run.run_id, commands)
            if waiting or run.cancel_requested:
                wake_at = now if wake_at is None else min(wake_at, now)
            self._append(run.run_id, first_seq, events, now)
            self._runs[run.run_id] = dataclasses.replace(
                run,
                state=RunState.SUSPENDED,
                next_seq=first_seq + len(events),
                updated_at=now,
                wake_at=wake_at,
                lease_owner=None,
                lease_expires_at=None,
            )
            self._notify()

    async def finish_run(
        self,
        lease: Lease,
        first_seq: int,
        events: Sequence[NewEvent],
        *,
        state: RunState,
        result: bytes | None = None,
        error: bytes | None = None,
    ) -> None:
        if not RunState(state).is_terminal:
            raise ValueError(f"finish_run needs a terminal state, not {state!s}")
        with self._lock:
            self._check_open()
            now = self._clock()
            run = self._fence(lease, first_seq, now)
            self._append(run.run_id, first_seq, events, now)
            self._runs[run.run_id] = dataclasses.replace(
                run,
                state=RunState(state),
                result=result,
                error=error,
                next_seq=first_seq + len(events),
                updated_at=now,
                wake_at=None,
                lease_owner=None,
                lease_expires_at=None,
            )
            self._notify()

    # -- signals and cancellation ------------------------------------------------------

    async def send_signal(self, run_id: str, name: str, payload: bytes) -> int:
        with self._lock:
            self._check_open()
            run = self._runs.get(run_id)
            if run is None:
                raise RunNotFoundError(run_id)
            if run.state.is_terminal:
                raise RunFinishedError(run_id, run.state.value, "signal")
            now = self._clock()
            self._last_signal_id += 1
            sid = self._last_signal_id
            self._signals[sid] = _Signal(SignalRecord(sid, run_id, name, payload, now))
            self._mailbox[run_id].append(sid)
            # Commit before wake: the run is due in the same step as the signal.
            wake = now if run.wake_at is None else min(run.wake_at, now)
            self._runs[run_id] = dataclasses.replace(run, wake_at=wake, updated_at=now)
            self._notify()
            return sid

    async def next_signal(self, run_id: str, name: str) -> SignalRecord | None:
        with self._lock:
            self._check_open()
            for sid in self._mailbox.get(run_id, ()):
                signal = self._signals[sid]
                if signal.consumed_seq is None and signal.record.name == name:
                    return signal.record
            return None

    async def get_idempotent(self, scope: str, key: str) -> bytes | None:
        with self._lock:
            self._check_open()
            return self._idempotent.get((scope, key))

    async def put_idempotent(self, scope: str, key: str, result: bytes) -> bytes:
        with self._lock:
            self._check_open()
            return self._idempotent.setdefault((scope, key), result)

    async def request_cancel(self, run_id: str, cancelled_event: NewEvent) -> RunState:
        with self._lock:
            self._check_open()
            run = self._runs.get(run_id)
            if run is None:
                raise RunNotFoundError(run_id)
            if run.state.is_terminal:
                raise RunFinishedError(run_id, run.state.value, "cancel")
            now = self._clock()
            if (
                run.state is RunState.RUNNING
                and run.lease_expires_at is not None
                and run.lease_expires_at >= now
            ):
                wake = now if run.wake_at is None else min(run.wake_at, now)
                self._runs[run_id] = dataclasses.replace(
                    run, cancel_requested=True, wake_at=wake, updated_at=now
                )
                self._notify()
                return RunState.RUNNING
            self._append(run_id, run.next_seq, [cancelled_event], now)
            self._runs[run_id] = dataclasses.replace(
                run,
                state=RunState.CANCELLED,
                next_seq=run.next_seq + 1,
                cancel_requested=True,
                wake_at=None,
                lease_owner=None,
                lease_expires_at=None,
                updated_at=now,
            )
            self._notify()
            return RunState.CANCELLED

    # -- dispatched steps ----------------------------------------------------------------

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
            )[:limit]
            claimed = []
            for t in due:
                task = dataclasses.replace(
                    t, state="leased", lease_owner=owner, lease_expires_at=now + ttl
                )
                self._tasks[t.task_id] = task
                claimed.append((TaskLease(t.task_id, owner, t.attempt, now + ttl), task))
            if changed:
                self._notify()
            return claimed

    def _sweep_tasks(self, now: float) -> bool:
        """Expired task leases consume their attempt; return whether any did."""
        expired = [
            t
            for t in self._tasks.values()
            if t.state == "leased" and t.lease_expires_at is not None and t.lease_expires_at < now
        ]
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

    # -- notifications -------------------------------------------------------------------

    async def wait_for_change(self, timeout: float) -> None:
        if timeout <= 0:
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self._waiters[fut] = loop
        try:
            await asyncio.wait([fut], timeout=timeout)
        finally:
            with self._lock:
                self._waiters.pop(fut, None)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _holds(run: RunRecord, lease: Lease, now: float) -> bool:
    """Whether ``lease`` is the run's live lease at ``now``."""
    return (
        run.state is RunState.RUNNING
        and run.lease_owner == lease.owner
        and run.lease_token == lease.token
        and run.lease_expires_at is not None
        and run.lease_expires_at >= now
    )


def _holds_task(task: TaskRecord, lease: TaskLease, now: float) -> bool:
    """Whether ``lease`` is the task's live lease at ``now``."""
    return (
        task.state == "leased"
        and task.lease_owner == lease.owner
        and task.attempt == lease.attempt
        and task.lease_expires_at is not None
        and task.lease_expires_at >= now
    )
