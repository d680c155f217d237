"""The crash tester's store proxy: counts a worker's writes and kills the
worker at one of them.

A worker is given a :class:`FencedStore` around the real store. Every call
passes through; the *writes* (see :data:`WRITES`) are numbered. At the chosen
write the proxy crashes the worker, either before the write reaches the store
(it never lands) or right after it landed (the worker never sees the answer):
it abandons the worker at once (no cleanup, no lease release) and from then
on refuses every call from that worker, so nothing it still has in flight can
land. What landed is recorded in a :class:`Landed` shared by every worker of
one scenario, so a step body can tell whether its completion is journaled.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from keel.core.events import EventType, StepAttemptFailed, read
from keel.store.base import Lease, NewEvent, NewSnapshot, TaskLease
from keel.store.ports import (
    ChangeFeed,
    Committed,
    Continue,
    Facts,
    Finish,
    GraphSpecs,
    IdempotencyKeys,
    Mailbox,
    OperatorReads,
    RunAdmin,
    RunJournal,
    Schedules,
    Store,
    Suspend,
    TaskQueues,
    Turn,
    WorkerRegistry,
)

__all__ = ["WRITES", "CrashAt", "FencedStore", "Landed", "Write"]

#: What counts as a write: every call a worker makes that records something of
#: a run. ``runs.commit`` (a Turn: events, and with them signals consumed,
#: children created, tasks dispatched, the suspend/finish/continue) is the
#: journal write; snapshots, results stored under idempotency keys, large
#: results stored as facts and the results of dispatched steps are the others.
#: Claims, lease renewals and the worker registry record no run's progress and
#: are not counted: a crash at one of them is the same as a crash before the
#: next write.
WRITES: frozenset[tuple[str, str]] = frozenset(
    {
        ("runs", "commit"),
        ("runs", "save_snapshot"),
        ("keys", "put"),
        ("facts", "save"),
        ("tasks", "complete"),
        ("tasks", "fail"),
    }
)

When = Literal["before", "after"]


@dataclass(frozen=True, slots=True)
class Write:
    """One write a worker made: its number (from 1), the call, the run it is
    for and what it recorded."""

    index: int
    call: str
    run_id: str | None
    what: str

    def __str__(self) -> str:
        run = f" run {self.run_id}" if self.run_id else ""
        return f"{self.call}{run}: {self.what}"


@dataclass(frozen=True, slots=True)
class CrashAt:
    """Crash the worker at its ``write``-th write, ``before`` it lands or ``after``."""

    write: int
    when: When


@dataclass
class Landed:
    """What the workers of one scenario have written so far: every write, and
    where each step command's end and each failed attempt landed."""

    writes: list[tuple[str, Write]] = field(default_factory=list)  # (worker label, write)
    #: (run id, command) -> global number of the write that journaled its
    #: step_completed or step_failed (or stored a dispatched step's end in its task).
    step_ended: dict[tuple[str, str], int] = field(default_factory=dict)
    #: (run id, command, attempt) -> global number of the write that journaled
    #: that attempt's failure.
    attempt_failed: dict[tuple[str, str, int], int] = field(default_factory=dict)

    #: task id -> (run id, command) of the dispatched step it runs.
    tasks: dict[int, tuple[str, str]] = field(default_factory=dict)

    def record(self, label: str, write: Write, args: tuple[Any, ...], result: Any) -> None:
        self.writes.append((label, write))
        if write.call in ("tasks.complete", "tasks.fail"):
            self._task_ended(write.call, cast(TaskLease, args[0]), args)
        if write.call != "runs.commit":
            return
        lease, turn = cast(Lease, args[0]), cast(Turn, args[1])
        if turn.tasks and isinstance(result, Committed):
            for task_id, task in zip(result.task_ids, turn.tasks, strict=False):
                self.tasks[task_id] = (lease.run_id, task.command)
        for event in turn.events:
            if event.command is None:
                continue
            key = (lease.run_id, event.command)
            if event.type in (EventType.STEP_COMPLETED, EventType.STEP_FAILED):
                self.step_ended.setdefault(key, len(self.writes))
            elif event.type == EventType.STEP_ATTEMPT_FAILED:
                attempt = read(StepAttemptFailed, event.data).attempt
                self.attempt_failed.setdefault((*key, attempt), len(self.writes))

    def _task_ended(self, call: str, lease: TaskLease, args: tuple[Any, ...]) -> None:
        """A dispatched step's attempt ended in its task: for good (a result, or
        a failure with no retry) or that attempt only."""
        key = self.tasks.get(lease.task_id)
        if key is None:
            return
        retry_at = args[2] if len(args) > 2 else None
        if call == "tasks.complete" or retry_at is None:
            self.step_ended.setdefault(key, len(self.writes))
        else:
            self.attempt_failed.setdefault((*key, lease.attempt), len(self.writes))


class _Gate:
    """One worker's passage to the store: numbers its writes and crashes it."""

    def __init__(
        self, label: str, landed: Landed, crash: CrashAt | None, die: Callable[[], None]
    ) -> None:
        self.label = label
        self.landed = landed
        self.crash = crash
        self.die = die
        self.count = 0
        self.dead = False
        self.crashed_at: Write | None = None
        self.died = asyncio.Event()

    def _kill(self, write: Write) -> None:
        self.dead = True
        self.crashed_at = write
        self.died.set()
        self.die()

    async def call(self, capability: str, name: str, fn: Any, args: Any, kwargs: Any) -> Any:
        if self.dead:
            # The fence: a crashed worker's calls never reach the store. Its
            # tasks were cancelled as it died; this ends any that still ask.
            raise asyncio.CancelledError("the worker crashed (keel.testing)")
        if (capability, name) not in WRITES:
            return await fn(*args, **kwargs)
        self.count += 1
        write = Write(self.count, f"{capability}.{name}", _run_of(args), _describe(name, args))
        crash = self.crash
        if crash is not None and crash.write == self.count and crash.when == "before":
            self._kill(write)
            raise asyncio.CancelledError("the worker crashed before this write (keel.testing)")
        result = await fn(*args, **kwargs)
        self.landed.record(self.label, write, args, result)
        if crash is not None and crash.write == self.count:
            self._kill(write)
            raise asyncio.CancelledError("the worker crashed after this write (keel.testing)")
        return result


class _Capability:
    """A capability object whose coroutine methods go through a gate."""

    def __init__(self, inner: Any, name: str, gate: _Gate) -> None:
        self._inner = inner
        self._name = name
        self._gate = gate

    def __getattr__(self, attr: str) -> Any:
        target = getattr(self._inner, attr)
        if not asyncio.iscoroutinefunction(target):
            return target
        gate, capability = self._gate, self._name

        @functools.wraps(target)
        async def through(*args: Any, **kwargs: Any) -> Any:
            return await gate.call(capability, attr, target, args, kwargs)

        return through


class FencedStore:
    """A :class:`~keel.store.ports.Store` for one worker: see the module doc."""

    def __init__(
        self,
        inner: Store,
        *,
        label: str,
        landed: Landed,
        crash: CrashAt | None = None,
        die: Callable[[], None] = lambda: None,
    ) -> None:
        self.inner = inner
        self.url = inner.url
        self.gate = gate = _Gate(label, landed, crash, die)
        self.runs = cast(RunJournal, _Capability(inner.runs, "runs", gate))
        self.mailbox = cast(Mailbox, _Capability(inner.mailbox, "mailbox", gate))
        self.tasks = cast(TaskQueues, _Capability(inner.tasks, "tasks", gate))
        self.keys = cast(IdempotencyKeys, _Capability(inner.keys, "keys", gate))
        self.facts = cast(Facts, _Capability(inner.facts, "facts", gate))
        self.schedules = cast(Schedules, _Capability(inner.schedules, "schedules", gate))
        self.reads = cast(OperatorReads, _Capability(inner.reads, "reads", gate))
        self.changes = cast(ChangeFeed, _Capability(inner.changes, "changes", gate))
        self.workers = cast(WorkerRegistry, _Capability(inner.workers, "workers", gate))
        # Operator actions (a worker's pruner): passed through, not counted as writes.
        self.admin = cast(RunAdmin, _Capability(inner.admin, "admin", gate))
        # Graph specs: idempotent and outside any run, so not counted as writes.
        self.specs = cast(GraphSpecs, _Capability(inner.specs, "specs", gate))

    async def open(self) -> None:
        await self.gate.call("store", "open", self.inner.open, (), {})

    async def close(self) -> None:
        await self.gate.call("store", "close", self.inner.close, (), {})

    async def now(self) -> float:
        result: float = await self.gate.call("store", "now", self.inner.now, (), {})
        return result


def _run_of(args: tuple[Any, ...]) -> str | None:
    first = args[0] if args else None
    return first.run_id if isinstance(first, Lease) else None


def _describe(name: str, args: tuple[Any, ...]) -> str:
    """What a write records, in a line (for reports)."""
    if name == "commit":
        return _describe_turn(cast(Turn, args[1]))
    if name == "save_snapshot":
        snapshot = cast(NewSnapshot, args[1])
        return f"snapshot up to seq {snapshot.upto_seq}"
    if name == "save":
        return f"fact {str(args[0])[:12]}... ({len(args[1])} bytes)"
    if name == "put":
        return f"result of step {args[0]!r} under idempotency key {args[1]!r}"
    lease = cast(TaskLease, args[0])
    verb = "result" if name == "complete" else "failure"
    return f"{verb} of dispatched step task {lease.task_id} (attempt {lease.attempt})"


def _describe_turn(turn: Turn) -> str:
    parts = [_event(e) for e in turn.events]
    if turn.consume_signal is not None:
        parts.append(f"signal {turn.consume_signal} consumed")
    if turn.children:
        parts.append(f"{len(turn.children)} child run(s) created")
    if turn.tasks:
        parts.append(f"{len(turn.tasks)} task(s) dispatched")
    end = turn.end
    if isinstance(end, Suspend):
        parts.append("suspend")
    elif isinstance(end, Finish):
        parts.append(f"finish {end.state}")
    elif isinstance(end, Continue):
        parts.append(f"continue as {end.successor.run_id}")
    return ", ".join(parts) or "lease released"


def _event(event: NewEvent) -> str:
    return f"{event.type} {event.command}" if event.command else event.type
