"""The in-memory store's data: its tables, the lock over them, the clock and the
change waiters, plus the row operations several capabilities share.

Every capability method does its whole work inside :meth:`Tables.transaction`
without awaiting, so each call is atomic for asyncio; the lock also makes the
tables safe to share between event loops on different threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from keel.core.states import RunState
from keel.errors import RunFinishedError, RunNotFoundError, StoreError
from keel.store._checks import check_move
from keel.store.base import (
    EventRecord,
    Lease,
    NewEvent,
    NewRun,
    RunRecord,
    ScheduleRecord,
    SignalRecord,
    SnapshotRecord,
    TaskRecord,
    WorkerVersion,
    created_record,
)

#: Task states that still hold work (deleted when their run ends).
OPEN_TASK_STATES = ("available", "leased")


@dataclass(slots=True)
class Signal:
    """A mailbox row: the signal and the seq of the event that consumed it."""

    record: SignalRecord
    consumed_seq: int | None = None


def due(wake_at: float | None, now: float) -> float:
    """``wake_at`` brought forward to ``now`` at the latest (commit before wake)."""
    return now if wake_at is None else min(wake_at, now)


class Tables:
    """Everything a :class:`~keel.store.memory.MemoryStore` holds (nothing survives
    the process). ``clock`` is the store's clock."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.is_open = False
        self.lock = threading.RLock()
        self.runs: dict[str, RunRecord] = {}
        self.children: dict[str, list[str]] = {}  # parent run id -> its child run ids
        self.events: dict[str, list[EventRecord]] = {}
        self.signals: dict[int, Signal] = {}
        self.mailbox: dict[str, list[int]] = {}  # run id -> its signal ids, oldest first
        self.last_signal_id = 0
        # (chain id, delivery id) -> signal id: a chain takes each delivery id once.
        self.deliveries: dict[tuple[str, str], int] = {}
        # (scope, key) -> (result, stored at on the store clock)
        self.keys: dict[tuple[str, str], tuple[bytes, float]] = {}
        self.facts: dict[str, bytes] = {}  # digest -> the bytes
        self.tasks: dict[int, TaskRecord] = {}
        self.task_ids: dict[tuple[str, str], int] = {}  # (run id, command) -> task id
        self.last_task_id = 0
        self.queue_limits: dict[str, int] = {}  # queue -> cluster-wide lease limit
        self.schedules: dict[str, ScheduleRecord] = {}
        self.snapshots: dict[str, SnapshotRecord] = {}  # run id -> its latest snapshot
        self.versions: dict[tuple[str, str, str], WorkerVersion] = {}
        self.specs: dict[tuple[str, str], bytes] = {}  # (graph, version) -> its spec
        self.waiters: dict[asyncio.Future[None], asyncio.AbstractEventLoop] = {}

    def __repr__(self) -> str:
        return f"MemoryStore(runs={len(self.runs)})"

    @contextlib.contextmanager
    def transaction(self) -> Iterator[float]:
        """Hold the lock over an open store; yields the store clock's ``now``."""
        with self.lock:
            if not self.is_open:
                raise StoreError(f"{self!r} is not open")
            yield self.clock()

    # -- change waiters ------------------------------------------------------------

    def notify(self) -> None:
        """Wake every change waiter (after a write)."""
        waiters, self.waiters = self.waiters, {}
        for fut, loop in waiters.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed
                loop.call_soon_threadsafe(_wake, fut)

    async def wait(self, timeout: float) -> None:
        """Return after the next :meth:`notify`, or after ``timeout``."""
        if timeout <= 0:
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self.lock:
            self.waiters[fut] = loop
        try:
            await asyncio.wait([fut], timeout=timeout)
        finally:
            with self.lock:
                self.waiters.pop(fut, None)

    # -- rows shared by several capabilities (the caller is in a transaction) ---------

    def append(self, run_id: str, first_seq: int, events: Sequence[NewEvent], now: float) -> None:
        journal = self.events[run_id]
        for i, e in enumerate(events):
            journal.append(EventRecord(run_id, first_seq + i, e.type, e.command, e.data, now))

    def insert_run(self, run: NewRun, now: float, lease: Lease | None = None) -> RunRecord:
        """Add the run row (pending, or running under ``lease``) and its started event."""
        record = created_record(run, now, lease)
        self.runs[run.run_id] = record
        if run.parent_run_id is not None:
            self.children.setdefault(run.parent_run_id, []).append(run.run_id)
        self.events[run.run_id] = []
        self.mailbox[run.run_id] = []
        self.append(run.run_id, 0, [run.started], now)
        return record

    def update(self, run: RunRecord, now: float, **changes: Any) -> RunRecord:
        """Store ``run`` with ``changes``; a new ``state`` must be a legal move."""
        if "state" in changes:
            check_move(run.run_id, run.state, changes["state"])
        self.runs[run.run_id] = updated = dataclasses.replace(run, updated_at=now, **changes)
        return updated

    def unlease(self, run: RunRecord, state: RunState, now: float, **changes: Any) -> RunRecord:
        """Move ``run`` to ``state`` held by no lease; unless ``changes`` set
        ``wake_at``, nothing wakes it."""
        dropped: dict[str, Any] = {"wake_at": None, "lease_owner": None, "lease_expires_at": None}
        return self.update(run, now, state=state, **(dropped | changes))

    def wake(self, run_id: str, now: float) -> None:
        """A pending/suspended run's awaited outcome is in: it is due now."""
        run = self.runs.get(run_id)
        if run is not None and run.state in (RunState.PENDING, RunState.SUSPENDED):
            self.update(run, now, wake_at=due(run.wake_at, now))

    def close_family(self, run: RunRecord, now: float, *, wake_parent: bool = True) -> None:
        """``run`` just ended: wake its parent (not when it continued as new: the
        chain goes on); ask the children it closes to cancel; drop its open tasks."""
        parent = self.runs.get(run.parent_run_id) if run.parent_run_id else None
        if wake_parent and parent is not None and not parent.state.is_terminal:
            self.update(parent, now, wake_at=due(parent.wake_at, now))
        for child_id in self.children.get(run.run_id, ()):
            child = self.runs[child_id]
            if _cascades(child, run) and not child.state.is_terminal:
                self.update(child, now, cancel_requested=True, wake_at=due(child.wake_at, now))
        # Nothing is left to claim, and a task worker's heartbeat finds its lease gone.
        for key in [k for k in self.task_ids if k[0] == run.run_id]:
            task = self.tasks[self.task_ids[key]]
            if task.state in OPEN_TASK_STATES:
                del self.tasks[task.task_id]
                del self.task_ids[key]

    def tip(self, run_id: str, action: str) -> RunRecord:
        """The live run a signal or cancel of ``run_id`` reaches: the run itself, or
        the tip of its continue-as-new chain."""
        run = self.runs.get(run_id)
        if run is None:
            raise RunNotFoundError(run_id)
        while run.state is RunState.CONTINUED and run.continued_to is not None:
            successor = self.runs.get(run.continued_to)
            if successor is None:
                break
            run = successor
        if run.state.is_terminal:
            raise RunFinishedError(run.run_id, run.state.value, action)
        return run

    def any_ended(self, run_ids: Collection[str]) -> bool:
        """Whether one of these runs has ended (a parent must not sleep through it)."""
        return any(
            (r := self.runs.get(run_id)) is not None and r.state.is_terminal for run_id in run_ids
        )


def _cascades(child: RunRecord, parent: RunRecord) -> bool:
    """Whether the end of ``parent`` cancels ``child``: 'cancel' children always,
    'wait' children when the parent was cancelled or terminated (it does not wait then)."""
    return child.parent_close == "cancel" or (
        child.parent_close == "wait" and parent.state in (RunState.CANCELLED, RunState.TERMINATED)
    )


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
