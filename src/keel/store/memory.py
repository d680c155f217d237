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
    RunCancellingError,
    StoreError,
)
from keel.store._checks import (
    MAX_PAGE,
    check_ttl,
    check_versions,
    decode_cursor,
    encode_cursor,
    run_filter,
)
from keel.store.base import (
    Claimed,
    EventRecord,
    Lease,
    NewEvent,
    NewRun,
    RenewOutcome,
    RunPage,
    RunRecord,
    ScheduleRecord,
    SignalRecord,
    SnapshotRecord,
    TaskRecord,
    WorkerVersion,
)
from keel.store.memory_children import MemoryChildren
from keel.store.memory_continue import MemoryContinue
from keel.store.memory_schedules import MemorySchedules
from keel.store.memory_snapshots import MemorySnapshots
from keel.store.memory_tasks import MemoryTasks
from keel.store.memory_versions import MemoryVersions


@dataclass(slots=True)
class _Signal:
    record: SignalRecord
    consumed_seq: int | None = None


class MemoryStore(
    MemoryTasks, MemorySchedules, MemoryChildren, MemoryContinue, MemorySnapshots, MemoryVersions
):
    """A store in a Python dict. ``clock`` is the store's clock (default ``time.time``).

    The dispatched-step (task) methods are in :class:`~keel.store.memory_tasks.MemoryTasks`,
    the schedule methods in :class:`~keel.store.memory_schedules.MemorySchedules`,
    the child-run ones in :class:`~keel.store.memory_children.MemoryChildren`,
    continue-as-new in :class:`~keel.store.memory_continue.MemoryContinue`,
    the journal snapshots in :class:`~keel.store.memory_snapshots.MemorySnapshots`,
    the worker versions in :class:`~keel.store.memory_versions.MemoryVersions`.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.url = "memory://"
        self._clock = clock
        self._open = False
        self._lock = threading.RLock()
        self._runs: dict[str, RunRecord] = {}
        self._children: dict[str, list[str]] = {}  # parent run id -> its child run ids
        self._events: dict[str, list[EventRecord]] = {}
        self._signals: dict[int, _Signal] = {}
        self._idempotent: dict[tuple[str, str], bytes] = {}
        self._mailbox: dict[str, list[int]] = {}  # run id -> its signal ids, oldest first
        self._last_signal_id = 0
        # (chain id, delivery id) -> signal id: a chain takes each delivery id once.
        self._deliveries: dict[tuple[str, str] | None, int] = {}
        self._tasks: dict[int, TaskRecord] = {}
        self._task_ids: dict[tuple[str, str], int] = {}  # (run id, command) -> task id
        self._last_task_id = 0
        self._queue_limits: dict[str, int] = {}  # queue -> cluster-wide lease limit
        self._schedules: dict[str, ScheduleRecord] = {}
        self._snapshots: dict[str, SnapshotRecord] = {}  # run id -> its latest snapshot
        self._versions: dict[tuple[str, str, str], WorkerVersion] = {}
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
            record = self._insert(run, now, lease)
            self._notify()
            return record, lease, True

    def _insert_run(
        self, run: NewRun, now: float, lease_owner: str | None = None, lease_ttl: float = 30.0
    ) -> tuple[RunRecord, Lease | None]:
        """Insert a new run and its started event (the caller holds the lock)."""
        lease = None
        if lease_owner is not None:
            lease = Lease(run.run_id, lease_owner, 1, now + lease_ttl)
        return self._insert(run, now, lease), lease

    def _insert(self, run: NewRun, now: float, lease: Lease | None = None) -> RunRecord:
        """Add the run row (pending, or running under ``lease``) and its started event."""
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
            lease_owner=None if lease is None else lease.owner,
            lease_token=0 if lease is None else lease.token,
            lease_expires_at=None if lease is None else lease.expires_at,
            cancel_requested=False,
            next_seq=1,
            parent_run_id=run.parent_run_id,
            parent_close=run.parent_close,
            depth=run.depth,
            chain_id=run.chain_id,
            generation=run.generation,
        )
        self._runs[run.run_id] = record
        if run.parent_run_id is not None:
            self._children.setdefault(run.parent_run_id, []).append(run.run_id)
        self._events[run.run_id] = []
        self._mailbox[run.run_id] = []
        self._append(run.run_id, 0, [run.started], now)
        return record

    async def get_run(self, run_id: str) -> RunRecord | None:
        with self._lock:
            self._check_open()
            return self._runs.get(run_id)

    async def get_runs(self, run_ids: Collection[str]) -> dict[str, RunRecord]:
        with self._lock:
            self._check_open()
            return {i: self._runs[i] for i in run_ids if i in self._runs}

    async def list_runs(
        self,
        *,
        workflow: str | Collection[str] | None = None,
        state: RunState | Collection[RunState] | None = None,
        limit: int = 50,
        cursor: str | None = None,
        since: float | None = None,
        until: float | None = None,
        parent_run_id: str | None = None,
    ) -> RunPage:
        if not 1 <= limit <= MAX_PAGE:
            raise ConfigurationError(
                f"list_runs limit must be between 1 and {MAX_PAGE}, not {limit!r}"
            )
        where = run_filter(workflow, state, since, until, parent_run_id)
        before = decode_cursor(cursor) if cursor else None
        with self._lock:
            self._check_open()
            runs = [
                r
                for r in self._runs.values()
                if where.matches(r) and (before is None or (r.created_at, r.run_id) < before)
            ]
        runs.sort(key=lambda r: (r.created_at, r.run_id), reverse=True)
        if len(runs) > limit:
            return RunPage(runs[:limit], encode_cursor(runs[limit - 1]))
        return RunPage(runs, None)

    async def count_runs(
        self,
        *,
        workflow: str | Collection[str] | None = None,
        state: RunState | Collection[RunState] | None = None,
        since: float | None = None,
        until: float | None = None,
        parent_run_id: str | None = None,
    ) -> int:
        where = run_filter(workflow, state, since, until, parent_run_id)
        with self._lock:
            self._check_open()
            return sum(1 for r in self._runs.values() if where.matches(r))

    async def load_events(self, run_id: str, *, after_seq: int = -1) -> list[EventRecord]:
        with self._lock:
            self._check_open()
            return [e for e in self._events.get(run_id, ()) if e.seq > after_seq]

    # -- leases --------------------------------------------------------------------

    async def claim_runs(
        self,
        owner: str,
        *,
        limit: int,
        ttl: float,
        versions: Collection[tuple[str, str]] | None = None,
    ) -> list[Claimed]:
        if limit < 1:
            raise ValueError(f"claim limit must be at least 1, not {limit}")
        check_ttl(ttl)
        pairs = check_versions(versions)
        having = None if pairs is None else frozenset(pairs)
        with self._lock:
            self._check_open()
            now = self._clock()
            due: list[tuple[float, str]] = []
            for r in self._runs.values():
                if having is not None and (r.workflow, r.version) not in having:
                    continue
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
        cancel_delivered: bool = False,
        wake_on_children: Collection[str] = (),
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
            waiting = (
                waiting
                or self._task_done(run.run_id, commands)
                or self._children_ended(wake_on_children)
            )
            if waiting or (run.cancel_requested and not cancel_delivered):
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
            self._runs[run.run_id] = ended = dataclasses.replace(
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
            self._close_family(ended, now)
            self._drop_open_tasks(ended.run_id)
            self._notify()

    # -- signals and cancellation ------------------------------------------------------

    async def send_signal(
        self, run_id: str, name: str, payload: bytes, *, delivery_id: str | None = None
    ) -> int | None:
        with self._lock:
            self._check_open()
            addressed = self._runs.get(run_id)
            key = (
                None if addressed is None or delivery_id is None else (addressed.chain, delivery_id)
            )
            if key in self._deliveries:
                return None  # a repeat: the chain has this signal already
            run = self._tip(run_id, "signal")
            if run.cancel_requested:
                raise RunCancellingError(run.run_id)
            run_id = run.run_id
            now = self._clock()
            self._last_signal_id += 1
            sid = self._last_signal_id
            if key is not None:
                self._deliveries[key] = sid
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
            run = self._tip(run_id, "cancel")
            run_id = run.run_id
            now = self._clock()
            held = (
                run.state is RunState.RUNNING
                and run.lease_expires_at is not None
                and run.lease_expires_at >= now
            )
            if held or run.next_seq > 1:  # a worker delivers it; cleanup may run
                wake = now if run.wake_at is None else min(run.wake_at, now)
                self._runs[run_id] = dataclasses.replace(
                    run, cancel_requested=True, wake_at=wake, updated_at=now
                )
                self._notify()
                return run.state
            self._append(run_id, run.next_seq, [cancelled_event], now)
            self._runs[run_id] = ended = dataclasses.replace(
                run,
                state=RunState.CANCELLED,
                next_seq=run.next_seq + 1,
                cancel_requested=True,
                wake_at=None,
                lease_owner=None,
                lease_expires_at=None,
                updated_at=now,
            )
            self._close_family(ended, now)
            self._drop_open_tasks(ended.run_id)
            self._notify()
            return RunState.CANCELLED

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
