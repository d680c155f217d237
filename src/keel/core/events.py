"""Journal vocabulary: event types and command identity.

Every journal entry names the command it belongs to (kind, name, ordinal among
earlier commands of that kind and name in the same execution). Replay matches
the code's commands to the journal by that identity.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple


class EventType(StrEnum):
    """Kinds of journal events."""

    RUN_STARTED = "run_started"
    STEP_COMPLETED = "step_completed"
    STEP_ATTEMPT_FAILED = "step_attempt_failed"  # one attempt failed; a retry is due at retry_at
    STEP_FAILED = "step_failed"  # failed for good
    STEP_DISPATCHED = "step_dispatched"  # handed to a queue as a task; a task worker runs it
    TIMER_STARTED = "timer_started"
    TIMER_FIRED = "timer_fired"
    SIGNAL_AWAITED = "signal_awaited"
    SIGNAL_RECEIVED = "signal_received"
    SIGNAL_TIMED_OUT = "signal_timed_out"
    SIDE_EFFECT = "side_effect"  # now(), uuid4(), random(), side_effect(fn)
    PATCHED = "patched"  # patched(name) took the new code path: the run carries the patch
    # The run's cancel request reached the workflow here: replay raises
    # WorkflowCancelled at the same point, so cleanup code replays identically.
    CANCEL_REQUESTED = "cancel_requested"
    CHILD_STARTED = "child_started"  # the child run was created in the same transaction
    CHILD_COMPLETED = "child_completed"
    CHILD_FAILED = "child_failed"  # it failed, or could not be started (id taken, too deep)
    CHILD_CANCELLED = "child_cancelled"
    RUN_COMPLETED = "run_completed"
    RUN_FAILED = "run_failed"
    RUN_CANCELLED = "run_cancelled"
    RUN_CONTINUED = "run_continued"  # continue-as-new: ended; the successor has the new input


#: Events that resolve the command they belong to (the workflow's await returns).
RESOLVING = frozenset(
    {
        EventType.STEP_COMPLETED,
        EventType.STEP_FAILED,
        EventType.TIMER_FIRED,
        EventType.SIGNAL_RECEIVED,
        EventType.SIGNAL_TIMED_OUT,
        EventType.SIDE_EFFECT,
        EventType.PATCHED,
        EventType.CHILD_COMPLETED,
        EventType.CHILD_FAILED,
        EventType.CHILD_CANCELLED,
    }
)

#: Events that record progress of a pending command without resolving it.
PROGRESS = frozenset(
    {
        EventType.STEP_ATTEMPT_FAILED,
        EventType.STEP_DISPATCHED,
        EventType.TIMER_STARTED,
        EventType.SIGNAL_AWAITED,
        EventType.CHILD_STARTED,
    }
)

#: Events that describe the run itself, not a command.
RUN_EVENTS = frozenset(
    {
        EventType.RUN_STARTED,
        EventType.RUN_COMPLETED,
        EventType.RUN_FAILED,
        EventType.RUN_CANCELLED,
        EventType.RUN_CONTINUED,
    }
)


#: Events that change the workflow's course without belonging to a command:
#: replay acts on them at their journal position.
CONTROL_EVENTS = frozenset({EventType.CANCEL_REQUESTED})


class CommandKind(StrEnum):
    """Kinds of commands a workflow issues."""

    STEP = "step"
    SLEEP = "sleep"
    SIGNAL = "signal"
    NOW = "now"
    UUID4 = "uuid4"
    RANDOM = "random"
    SIDE_EFFECT = "side_effect"
    PATCH = "patch"
    CHILD = "child"  # a child workflow run; the name is the child's workflow


# ``kind.value`` goes through the enum's descriptor; replay formats a command
# id per issued command, so the plain strings are looked up instead.
KIND_TEXT: dict[CommandKind, str] = {kind: kind.value for kind in CommandKind}

#: Commands whose value is produced on the spot (journaled, returned synchronously).
IMMEDIATE_KINDS = frozenset(
    {CommandKind.NOW, CommandKind.UUID4, CommandKind.RANDOM, CommandKind.PATCH}
)


class CommandId(NamedTuple):
    """Identity of one command: kind, name and ordinal among same kind+name.

    A named tuple, not a frozen dataclass: replay creates one per command and
    a tuple is built in a third of the time.
    """

    kind: CommandKind
    name: str
    ordinal: int

    def __str__(self) -> str:
        return f"{KIND_TEXT[self.kind]}:{self.name}#{self.ordinal}"

    def describe(self) -> str:
        """Human-readable form used in error messages."""
        return f"{KIND_TEXT[self.kind]} {self.name!r} (#{self.ordinal})"

    @classmethod
    def parse(cls, text: str) -> CommandId:
        """Inverse of ``str()``; raises ``ValueError`` on malformed input."""
        kind, sep, rest = text.partition(":")
        name, sep2, ordinal = rest.rpartition("#")
        if not sep or not sep2 or not ordinal.isascii() or not ordinal.isdigit():
            raise ValueError(f"malformed command id {text!r}")
        return cls(CommandKind(kind), name, int(ordinal))
