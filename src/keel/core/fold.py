"""A run's state rebuilt from its journal alone: a pure fold over events.

No user code runs and nothing is replayed: each event is read through its
struct (:func:`keel.core.events.decode`) and applied to a :class:`RunView`,
giving the run as it stood after that event: the status of every command
(steps with their attempts, timers, signal waits, children, recorded values),
the signals consumed, whether a cancel reached the workflow, and the run's end.

:func:`views` yields one view per event (the dashboard's time travel),
:func:`view_at` the view after one position, :func:`fold` the view after the
last event. Views share nothing mutable: each is a snapshot.

User values (step results and inputs, signal payloads, run inputs) stay
encoded JSON ``bytes``, as in the journal; whoever shows them decodes them.
A step's input is on its first event (see :data:`keel.core.events.INPUT_CAP`
for the arguments too large to be journaled; older journals have none).

A step attempt that is running has no event yet (its outcome is journaled when
it ends), so the journal alone shows such a step only after an attempt ended;
``step_attempt_failed`` makes it ``retrying`` until its next attempt is journaled.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeAlias

import msgspec

from keel.core.events import (
    UNSET,
    CancelRequested,
    ChildCancelled,
    ChildCompleted,
    ChildFailed,
    ChildStarted,
    CommandId,
    Event,
    EventType,
    Patched,
    RunCancelled,
    RunCompleted,
    RunContinued,
    RunFailed,
    RunStarted,
    RunTerminated,
    SideEffect,
    SignalAwaited,
    SignalReceived,
    SignalTimedOut,
    StepAttemptFailed,
    StepCompleted,
    StepDispatched,
    StepFailed,
    TimerFired,
    TimerStarted,
    decode,
)
from keel.core.journal import TimedStoredEvent as JournalRow

#: The events of a step, each of which may record its input and arguments hash.
StepEvent: TypeAlias = StepCompleted | StepAttemptFailed | StepFailed | StepDispatched

#: What a command is doing after an event. Waiting states: ``retrying`` (a step
#: between attempts), ``dispatched`` (a step handed to a queue), ``waiting`` (a
#: timer or a signal wait), ``started`` (a child run). Ended states: the rest.
Status: TypeAlias = Literal[
    "retrying",
    "dispatched",
    "waiting",
    "started",
    "completed",
    "failed",
    "fired",
    "received",
    "timed_out",
    "cancelled",
    "recorded",
    "dropped",
]

#: The statuses of a command whose await has returned, or that the run's end
#: left unresolved (``dropped``: the run ended while the command waited).
ENDED: frozenset[Status] = frozenset(
    {"completed", "failed", "fired", "received", "timed_out", "cancelled", "recorded", "dropped"}
)

#: A run's status as its journal tells it (the run row may know more: a run
#: ``running`` here may be pending, running or suspended in the store).
RunStatus: TypeAlias = Literal[
    "running", "completed", "failed", "cancelled", "continued", "terminated"
]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One ended attempt of a step, as its event records it.

    ``started_at`` and ``worker`` are recorded by workers since they were added
    (``None`` in older journals and for steps run by a task worker);
    ``ended_at`` is the time the outcome was journaled.
    """

    number: int  # 1-based; 0 when the event did not record it
    outcome: Literal["completed", "failed"]
    ended_at: float
    started_at: float | None = None
    worker: str | None = None
    error: dict[str, Any] | None = None
    retry_at: float | None = None  # a failed attempt to be retried: when


@dataclass(frozen=True, slots=True)
class CommandView:
    """One command of the run after an event: what it is, how far it got."""

    command: str  # its id, e.g. ``step:charge#0``
    kind: str  # ``step``, ``sleep``, ``signal``, ``child``, ``now``, ...
    name: str
    status: Status
    first_seq: int
    last_seq: int
    started_at: float  # journal time of its first event
    updated_at: float  # journal time of its latest event
    value: bytes | None = None  # encoded JSON: result, payload, recorded value
    error: dict[str, Any] | None = None
    attempts: tuple[Attempt, ...] = ()
    queue: str | None = None  # a dispatched step
    retry_at: float | None = None  # ``retrying``: when the next attempt is due
    fire_at: float | None = None  # a timer: when it fires
    deadline: float | None = None  # a signal wait with a timeout
    signal: str | None = None  # a signal wait: the signal's name
    child_run_id: str | None = None
    child_workflow: str | None = None
    # A step's arguments (encoded JSON ``{parameter: value}``) as journaled with
    # its first event; ``None`` in older journals and when they were larger than
    # the cap, when ``input_size`` gives their size. ``args_hash`` digests them.
    input: bytes | None = None
    input_size: int | None = None
    args_hash: str | None = None

    @property
    def ended(self) -> bool:
        """Whether the workflow's await of this command has returned."""
        return self.status in ENDED


@dataclass(frozen=True, slots=True)
class ConsumedSignal:
    """A signal the workflow took from its mailbox."""

    seq: int
    name: str
    payload: bytes  # encoded JSON
    signal_id: int | None
    at: float


@dataclass(frozen=True, slots=True)
class RunView:
    """The run after the event at ``seq`` (see the module docstring)."""

    seq: int
    at: float  # journal time of that event
    event: str  # its type
    command: str | None  # the command it belongs to
    workflow: str = ""
    version: str = ""
    input: bytes = b"null"
    status: RunStatus = "running"
    result: bytes | None = None
    error: dict[str, Any] | None = None
    continued_to: str | None = None
    cancel_requested: bool = False
    commands: dict[str, CommandView] = field(default_factory=dict)  # in journal order
    signals: tuple[ConsumedSignal, ...] = ()

    @property
    def pending(self) -> list[CommandView]:
        """Commands the workflow is still waiting for, in journal order."""
        return [c for c in self.commands.values() if not c.ended]

    def of_kind(self, kind: str) -> list[CommandView]:
        """Commands of ``kind`` (``step``, ``sleep``, ``child``, ...), in journal order."""
        return [c for c in self.commands.values() if c.kind == kind]


def views(rows: Iterable[JournalRow]) -> Iterator[RunView]:
    """One :class:`RunView` per journal row, in order.

    Raises ``ValueError`` on a row whose type is unknown or whose data does not
    fit its type (an odd journal is not silently misread).
    """
    view: RunView | None = None
    for row in rows:
        event = decode(EventType(row.type), row.data)
        view = apply(view, row, event)
        yield view


def view_at(rows: Iterable[JournalRow], seq: int) -> RunView | None:
    """The view after the event at ``seq`` (``None`` if the journal is shorter)."""
    for view in views(rows):
        if view.seq == seq:
            return view
    return None


def fold(rows: Iterable[JournalRow]) -> RunView | None:
    """The view after the last event (``None`` for an empty journal)."""
    last = None
    for view in views(rows):
        last = view
    return last


def apply(view: RunView | None, row: JournalRow, event: Event) -> RunView:
    """The view after ``event`` (the decoded data of ``row``); ``view`` is unchanged."""
    base = RunView(seq=row.seq, at=row.created_at, event=row.type, command=row.command)
    if view is not None:
        base = replace(view, seq=row.seq, at=row.created_at, event=row.type, command=row.command)
    match event:
        case RunStarted():
            return replace(
                base, workflow=event.workflow, version=event.version, input=bytes(event.input)
            )
        case RunCompleted():
            return replace(_drop(base, row), status="completed", result=bytes(event.result))
        case RunFailed():
            return replace(_drop(base, row), status="failed", error=dict(event.error))
        case RunCancelled():
            return replace(_drop(base, row), status="cancelled")
        case RunContinued():
            return replace(_drop(base, row), status="continued", continued_to=event.continued_to)
        case RunTerminated():
            return replace(_drop(base, row), status="terminated")
        case CancelRequested():
            return replace(base, cancel_requested=True)
    if row.command is None:
        return base  # a command event without its command: nothing to attach it to
    cmd = _command_event(base.commands.get(row.command), row, event)
    commands = dict(base.commands)
    commands[row.command] = cmd
    signals = base.signals
    if isinstance(event, SignalReceived):
        consumed = ConsumedSignal(
            row.seq, event.name, bytes(event.payload), event.signal_id, row.created_at
        )
        signals = (*signals, consumed)
    return replace(base, commands=commands, signals=signals)


def _drop(view: RunView, row: JournalRow) -> RunView:
    """``view`` with the commands still waiting marked ``dropped`` at ``row`` (the run's end)."""
    if all(c.ended for c in view.commands.values()):
        return view
    commands = {
        key: c
        if c.ended
        else replace(c, status="dropped", last_seq=row.seq, updated_at=row.created_at)
        for key, c in view.commands.items()
    }
    return replace(view, commands=commands)


def _command_event(prev: CommandView | None, row: JournalRow, event: Event) -> CommandView:
    """``prev`` (``None``: first seen) after ``event`` of its command."""
    assert row.command is not None
    if prev is None:
        try:
            cid = CommandId.parse(row.command)
            kind, name = cid.kind.value, cid.name
        except ValueError:  # an id this code cannot parse: show it as it is
            kind, name = "", row.command
        prev = CommandView(
            command=row.command,
            kind=kind,
            name=name,
            status="waiting",
            first_seq=row.seq,
            last_seq=row.seq,
            started_at=row.created_at,
            updated_at=row.created_at,
        )
    cmd = replace(prev, last_seq=row.seq, updated_at=row.created_at)
    if isinstance(event, StepEvent):
        cmd = _step_input(cmd, event)
    match event:
        case StepCompleted():
            attempt = _attempt(event, "completed", row.created_at, cmd)
            return replace(
                cmd,
                status="completed",
                value=bytes(event.result),
                attempts=(*cmd.attempts, attempt),
                retry_at=None,
            )
        case StepAttemptFailed():
            attempt = _attempt(event, "failed", row.created_at, cmd)
            attempt = replace(attempt, error=dict(event.error), retry_at=event.retry_at)
            return replace(
                cmd,
                status="retrying",
                attempts=(*cmd.attempts, attempt),
                retry_at=event.retry_at,
                error=dict(event.error),
            )
        case StepFailed():
            attempts = cmd.attempts
            if event.task_id is UNSET or event.started_at is not UNSET:
                attempt = _attempt(event, "failed", row.created_at, cmd)
                attempts = (*attempts, replace(attempt, error=dict(event.error)))
            return replace(
                cmd, status="failed", error=dict(event.error), attempts=attempts, retry_at=None
            )
        case StepDispatched():
            return replace(cmd, status="dispatched", queue=event.queue)
        case TimerStarted():
            return replace(cmd, status="waiting", fire_at=event.fire_at)
        case TimerFired():
            return replace(cmd, status="fired")
        case SignalAwaited():
            return replace(cmd, status="waiting", signal=event.name, deadline=event.deadline)
        case SignalReceived():
            return replace(cmd, status="received", signal=event.name, value=bytes(event.payload))
        case SignalTimedOut():
            return replace(cmd, status="timed_out", signal=event.name)
        case SideEffect():
            return replace(cmd, status="recorded", value=bytes(event.value))
        case Patched():
            return replace(cmd, status="recorded", value=msgspec.json.encode(event.patch))
        case ChildStarted():
            return replace(
                cmd,
                status="started",
                child_run_id=event.child_run_id,
                child_workflow=event.workflow,
            )
        case ChildCompleted():
            return replace(
                cmd,
                status="completed",
                child_run_id=event.child_run_id or cmd.child_run_id,
                value=bytes(event.result),
            )
        case ChildFailed():
            return replace(
                cmd,
                status="failed",
                child_run_id=event.child_run_id or cmd.child_run_id,
                error=dict(event.error),
            )
        case ChildCancelled():
            return replace(
                cmd, status="cancelled", child_run_id=event.child_run_id or cmd.child_run_id
            )
    return cmd  # an event of a type that says nothing about its command's status


def _step_input(cmd: CommandView, event: StepEvent) -> CommandView:
    """``cmd`` with the input (or its size) and arguments hash ``event`` records."""
    recorded, size, digest = event.input, event.input_size, event.args_hash
    if recorded is UNSET and size is UNSET and (digest is None or cmd.args_hash is not None):
        return cmd
    return replace(
        cmd,
        input=cmd.input if recorded is UNSET else bytes(recorded),
        input_size=cmd.input_size if size is UNSET else size,
        args_hash=cmd.args_hash if cmd.args_hash is not None else digest,
    )


def _attempt(
    event: StepCompleted | StepAttemptFailed | StepFailed,
    outcome: Literal["completed", "failed"],
    at: float,
    cmd: CommandView,
) -> Attempt:
    if isinstance(event, StepFailed):
        number = event.attempts if event.attempts is not UNSET else 0
    else:
        number = event.attempt
    if number == 0:  # not recorded: the one after the last known
        number = len(cmd.attempts) + 1
    started = event.started_at
    worker = event.worker
    return Attempt(
        number=number,
        outcome=outcome,
        ended_at=at,
        started_at=None if started is UNSET else started,
        worker=None if worker is UNSET else worker,
    )
