"""One pass over a run's pending commands: each command's planner, in issue
order, and the rules that span commands.

* A command that resolves (its outcome journaled) makes the pass
  *progressed*: the workflow may have moved on, so the driver plans again
  before it starts, dispatches or waits for anything.
* ``step_dispatched`` and ``child_started`` are recorded last, and only in a
  pass that did not progress, so that no other write of the pass (a signal's)
  carries one without its row; one kind of row per write, tasks first.
* A signal read is handed to the first wait of its name; a later wait of that
  name is planned in the next pass, after a new read (so is everything after
  it, to keep the journal in issue order). So is everything after a keyed
  result to store.
"""

from __future__ import annotations

import math
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from keel.core.commands import Command
from keel.core.events import RESOLVING, CommandKind
from keel.store.base import NewRun, NewTask, RunRecord, SignalRecord, TaskRecord
from keel.worker.actions import (
    Action,
    ConsumeSignal,
    Dispatch,
    Planned,
    RecordEvent,
    StartAttempt,
    StartChildren,
    StoreKeyed,
    Suspend,
    WaitUntil,
    Wake,
    WakeAt,
    WakeOnChild,
    WakeOnSignal,
    WakeOnTask,
)
from keel.worker.plan import children, queued, signals, steps, timers


@dataclass(slots=True)
class Reads:
    """What the store said just before a pass was planned (see :mod:`keel.worker.gather`)."""

    now: float  # the store's clock
    #: The task row of each dispatched step, by command key (``None``: missing).
    tasks: Mapping[str, TaskRecord | None] = field(default_factory=dict)
    #: Results stored under the idempotency keys of queued steps, by command key.
    keyed: Mapping[str, bytes] = field(default_factory=dict)
    #: The oldest unconsumed signal of each name waited on.
    signals: Mapping[str, SignalRecord] = field(default_factory=dict)
    #: The run of each id a child command names (started or to start), a run
    #: that continued-as-new replaced by the latest of its chain; ``None``: no such run.
    children: Mapping[str, RunRecord | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Settings:
    """The worker's settings planning depends on."""

    inline_wait: float  # timers and retries due within this many seconds are waited for here
    max_child_depth: int
    traceparent: str | None = None  # the trace context children started now continue


# Reads and TurnPlan are not frozen: one of each is made per pass, on the hot path.
@dataclass(slots=True)
class TurnPlan:
    """One pass: what to journal now, and what to do if that changes nothing."""

    now: float  # the store's clock it was planned at
    #: Each command's actions, in issue order; the rest is moot once the workflow has ended.
    journal: list[list[Action]]
    progressed: bool
    #: Not progressed: ``step_dispatched`` / ``child_started`` events and the write of their rows.
    rows: list[Action]
    #: Not progressed, no rows: work to start here once the journal is durable.
    work: list[StartAttempt | WaitUntil]
    #: Not progressed, no rows: what wakes the run if it suspends.
    wake: list[Wake]


_WORK = (StartAttempt, WaitUntil)
_WAKE = (WakeAt, WakeOnSignal, WakeOnTask, WakeOnChild)
_ROWS = (Dispatch, StartChildren)


def plan_turn(
    pending: Sequence[Command],
    busy: Container[str],
    reads: Reads,
    run: RunRecord,
    settings: Settings,
) -> TurnPlan:
    """Plan the pending commands not ``busy`` (in flight in this worker)."""
    now, inline_wait = reads.now, settings.inline_wait
    journal: list[list[Action]] = []
    work: list[StartAttempt | WaitUntil] = []
    wake: list[Wake] = []
    held: list[Action] = []  # dispatches and child starts: recorded last, if at all
    received: set[str] = set()  # names whose signal read this pass hands out
    progressed = False
    for cmd in pending:
        if cmd.key in busy:
            continue
        kind = cmd.id.kind
        planned: list[Planned]
        if kind is CommandKind.STEP:
            if cmd.dispatched:
                planned = queued.plan_task(cmd, reads.tasks[cmd.key], reads.keyed.get(cmd.key))
            elif getattr(cmd.target, "queue", None) is not None:  # queued.is_queued(cmd)
                planned = queued.plan_dispatch(cmd, reads.keyed.get(cmd.key))
            else:
                planned = steps.plan_attempt(cmd, now, inline_wait)
        elif kind is CommandKind.SIDE_EFFECT:
            planned = steps.plan_attempt(cmd, now, inline_wait)
        elif kind is CommandKind.SLEEP:
            planned = timers.plan_timer(cmd, now, inline_wait)
        elif kind is CommandKind.SIGNAL:
            if cmd.id.name in received:
                break
            planned = signals.plan_signal(cmd, now, reads.signals.get(cmd.id.name))
        elif kind is CommandKind.CHILD:
            if cmd.child_run_id is None:
                run_id = children.child_spec(cmd).run_id
                taken = reads.children[run_id] is not None
                starting = {r.run_id for a in held if isinstance(a, StartChildren) for r in a.runs}
                planned = children.plan_start(
                    cmd, run, settings.max_child_depth, taken, starting, settings.traceparent
                )
            else:
                planned = children.plan_outcome(cmd, reads.children[cmd.child_run_id])
        else:
            continue
        actions: list[Action] | None = None
        for item in planned:
            if isinstance(item, _WORK):
                work.append(item)
            elif isinstance(item, _WAKE):
                wake.append(item)
            else:
                if actions is None:
                    actions = []
                actions.append(item)
                if isinstance(item, RecordEvent) and item.event.TYPE in RESOLVING:
                    progressed = True
        if actions is None:
            continue
        last = actions[-1]
        if isinstance(last, _ROWS):
            held += actions
        elif isinstance(last, ConsumeSignal):
            journal.append(actions)
            received.add(cmd.id.name)
        elif isinstance(last, StoreKeyed):
            journal.append(actions)
            progressed = True
            break
        else:
            journal.append(actions)
    if progressed:
        return TurnPlan(now, journal, True, [], [], [])
    return TurnPlan(now, journal, False, _rows(held) if held else [], work, wake)


def _rows(held: list[Action]) -> list[Action]:
    """The held events, then one write creating their rows: the dispatches'
    if there are any (the child starts are planned again next pass), else the
    child starts'."""
    tasks: list[NewTask] = []
    runs: list[NewRun] = []
    definitions: list[Any] = []
    dispatched: list[Action] = []
    started: list[Action] = []
    group: list[Action] = []
    for item in held:
        if isinstance(item, Dispatch):
            dispatched += group
            tasks += item.tasks
            group = []
        elif isinstance(item, StartChildren):
            started += group
            runs += item.runs
            definitions += item.definitions
            group = []
        elif isinstance(item, RecordEvent):
            group.append(item)
    if tasks:
        return [*dispatched, Dispatch(tuple(tasks))]
    return [*started, StartChildren(tuple(runs), tuple(definitions))]


def suspension(
    wake: Iterable[Wake | WaitUntil], *, cancel_delivered: bool, due_at: float | None = None
) -> Suspend:
    """The suspend that wakes the run on the earliest of ``wake`` (a
    :class:`WaitUntil` not waited for here counts as its time; ``due_at``: due
    then anyway, e.g. an attempt not started). ``cancel_delivered``: the
    workflow has the cancel request, so it must not keep waking the run while
    its cleanup sleeps or waits."""
    times: list[float] = []
    names: set[str] = set()
    tasks: set[str] = set()
    kids: set[str] = set()
    for item in wake:
        if isinstance(item, WakeAt | WaitUntil):
            if math.isfinite(item.at):
                times.append(item.at)
        elif isinstance(item, WakeOnSignal):
            names.add(item.name)
        elif isinstance(item, WakeOnTask):
            tasks.add(item.command)
        else:
            kids.add(item.run_id)
    if due_at is not None:
        times.append(due_at)
    return Suspend(
        min(times) if times else None,
        wake_on_signals=frozenset(names),
        wake_on_tasks=frozenset(tasks),
        wake_on_children=frozenset(kids),
        cancel_delivered=cancel_delivered,
    )
