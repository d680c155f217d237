"""Commands as the replay sees them: what a workflow asked for, which journal
events may belong to each kind, and how a workflow run ended."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from keel.core.events import HASHED, CommandId, CommandKind, EventType, decode, recorded_hash
from keel.core.journal import JournalEntry

#: Which event types may belong to which command kind.
ALLOWED: dict[CommandKind, frozenset[EventType]] = {
    CommandKind.STEP: frozenset(
        {
            EventType.STEP_COMPLETED,
            EventType.STEP_ATTEMPT_FAILED,
            EventType.STEP_FAILED,
            EventType.STEP_DISPATCHED,
        }
    ),
    CommandKind.SIDE_EFFECT: frozenset(
        {EventType.SIDE_EFFECT, EventType.STEP_ATTEMPT_FAILED, EventType.STEP_FAILED}
    ),
    CommandKind.SLEEP: frozenset({EventType.TIMER_STARTED, EventType.TIMER_FIRED}),
    CommandKind.SIGNAL: frozenset(
        {EventType.SIGNAL_AWAITED, EventType.SIGNAL_RECEIVED, EventType.SIGNAL_TIMED_OUT}
    ),
    CommandKind.NOW: frozenset({EventType.SIDE_EFFECT}),
    CommandKind.UUID4: frozenset({EventType.SIDE_EFFECT}),
    CommandKind.RANDOM: frozenset({EventType.SIDE_EFFECT}),
    CommandKind.PATCH: frozenset({EventType.PATCHED}),
    CommandKind.CHILD: frozenset(
        {
            EventType.CHILD_STARTED,
            EventType.CHILD_COMPLETED,
            EventType.CHILD_FAILED,
            EventType.CHILD_CANCELLED,
        }
    ),
}


class LiveSource(Protocol):
    """Where live values of ``now()``, ``uuid4()`` and ``random()`` come from."""

    def now(self) -> Any: ...

    def uuid4(self) -> Any: ...

    def random(self) -> float: ...


@dataclass(eq=False, slots=True)
class Command:
    """A command the workflow issued and is (or was) waiting on."""

    id: CommandId
    key: str  # ``str(id)``: how the journal names it
    future: asyncio.Future[Any]
    result_type: Any = Any
    target: Any = None  # the step definition / side-effect callable (opaque to the core)
    args: bytes | None = None  # encoded arguments (steps)
    args_hash: str | None = None
    duration: float | None = None  # sleep
    timeout: float | None = None  # signal wait
    idempotency_key: str | None = None  # user key: reuse a result stored by any run
    shielded: bool = False  # not discarded by a cancel request (a compensation)
    # The journal holds events of this command whose arguments hash is not
    # compared yet (done at its first event, which carries the recorded hash).
    unchecked: bool = False
    # progress recovered from the journal
    attempts: int = 0  # failed attempts so far
    retry_at: float | None = None
    dispatched: bool = False  # handed to a task queue (step_dispatched journaled)
    task_id: int | None = None  # the store's task id, when known
    fire_at: float | None = None  # timer
    awaited: bool = False  # signal wait journaled
    deadline: float | None = None  # signal wait deadline
    started: asyncio.Future[str] | None = None  # child: resolved at child_started
    child_run_id: str | None = None  # child: the run started for it


@dataclass
class Outcome:
    """How the workflow function ended (when it has)."""

    status: Literal["completed", "failed", "cancelled", "continued"]
    result: bytes | None = None  # encoded result; "continued": the successor's encoded input
    error: BaseException | None = None


def describe_key(key: str | None) -> str:
    """A journaled command id as error messages show it."""
    if key is None:
        return "the run"
    try:
        return CommandId.parse(key).describe()
    except ValueError:
        return repr(key)


def describe_event(entry: JournalEntry) -> str:
    """A journal event as a nondeterminism error shows what was recorded."""
    text = f"{entry.type.value} of {describe_key(entry.command)}"
    if entry.type is EventType.PATCHED:
        text += (
            " (a removed patched() call? keep deprecate_patch() with its name "
            "until the runs that carry the patch have finished)"
        )
    return text


CHILD_EVENTS = frozenset(
    {
        EventType.CHILD_STARTED,
        EventType.CHILD_COMPLETED,
        EventType.CHILD_FAILED,
        EventType.CHILD_CANCELLED,
    }
)


#: Events that carry the arguments hash of their step or child.
HASHED_EVENTS = frozenset(cls.TYPE for cls in HASHED)


def args_hash_of(entry: JournalEntry) -> str | None:
    """The arguments hash an event of a step or child carries, if any."""
    if entry.type not in HASHED_EVENTS:
        return None
    return recorded_hash(decode(entry.type, entry.data))
