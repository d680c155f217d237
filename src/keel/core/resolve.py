"""How one journal event acts on the command it belongs to.

Pure bookkeeping shared by replay and the live tail: progress events set
fields of the command (attempts, retry time, timer deadline...), a resolving
event takes it off the pending commands (``release``) and settles its future
with the journaled value or error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from msgspec import UNSET

from keel.core import codec
from keel.core.commands import CHILD_EVENTS, HASHED_EVENTS, Command
from keel.core.events import (
    ChildCancelled,
    ChildCompleted,
    ChildFailed,
    ChildStarted,
    Event,
    EventType,
    SideEffect,
    SignalAwaited,
    SignalReceived,
    StepAttemptFailed,
    StepCompleted,
    StepFailed,
    TimerStarted,
    decode,
    read,
)
from keel.core.journal import JournalEntry
from keel.errors import (
    ChildWorkflowCancelled,
    ChildWorkflowError,
    NondeterminismError,
    SerializationError,
    SignalTimeoutError,
    StepFailedError,
)

# Events on_await() may apply at an await: they only touch the command and its
# own future (a child's also resolve its ``started`` future, so children are left
# to the usual round).
INLINE_RESOLVING = frozenset(
    {
        EventType.STEP_COMPLETED,
        EventType.STEP_FAILED,
        EventType.SIDE_EFFECT,
        EventType.TIMER_FIRED,
        EventType.SIGNAL_RECEIVED,
        EventType.SIGNAL_TIMED_OUT,
    }
)
INLINE_PROGRESS = frozenset(
    {
        EventType.STEP_ATTEMPT_FAILED,
        EventType.STEP_DISPATCHED,
        EventType.TIMER_STARTED,
        EventType.SIGNAL_AWAITED,
    }
)


def check_args_hash(
    run_id: str, cmd: Command, entry: JournalEntry, carried: dict[str, str], event: Event | None
) -> Event | None:
    """At a command's first journal event, compare its arguments hash with the
    recorded one; return the entry's event if it is decoded (``event``: the
    caller's, if it has it).

    Compared here, not when the code issued the command, so that a reordering
    is reported as such rather than as changed arguments. ``carried`` holds
    the hashes of first events a snapshot dropped.
    """
    if not cmd.unchecked:
        return event
    cmd.unchecked = False
    recorded = carried.get(cmd.key) if carried else None
    if recorded is None and entry.type in HASHED_EVENTS:
        if event is None:
            event = decode(entry.type, entry.data)
        # Every HASHED_EVENTS event has one (events.recorded_hash(), inline: hot path).
        found = event.args_hash  # type: ignore[union-attr]
        recorded = None if found is UNSET else found
    if recorded is not None and recorded != cmd.args_hash:
        raise NondeterminismError(
            run_id,
            entry.seq,
            f"{cmd.id.describe()} with arguments hash {recorded}",
            f"{cmd.id.describe()} with different arguments (hash {cmd.args_hash})",
        )
    return event


def apply_event(
    cmd: Command,
    entry: JournalEntry,
    event: Event | None,
    release: Callable[[Command], asyncio.Future[Any]],
) -> None:
    """Apply ``entry`` (already checked to belong to ``cmd``'s kind) to ``cmd``.

    ``event`` is the entry's decoded event if the caller has it (events whose
    data nothing here reads are not decoded); ``release`` removes ``cmd`` from
    the pending commands and returns the future to settle. (``x if
    isinstance(x, C) else read(C, data)``, not a helper: this is replay's
    hot path, and a call per event shows.)
    """
    t, data = entry.type, entry.data
    if t is EventType.STEP_COMPLETED or t is EventType.SIDE_EFFECT:
        if t is EventType.STEP_COMPLETED:
            done = event if isinstance(event, StepCompleted) else read(StepCompleted, data)
            raw = done.result
        else:
            effect = event if isinstance(event, SideEffect) else read(SideEffect, data)
            raw = effect.value
        fut = release(cmd)
        try:
            value = _decode(raw, cmd, "result")
        except Exception as exc:
            fut.set_exception(exc)
        else:
            fut.set_result(value)
    elif t is EventType.STEP_ATTEMPT_FAILED:
        attempt_failed = (
            event if isinstance(event, StepAttemptFailed) else read(StepAttemptFailed, data)
        )
        cmd.attempts = attempt_failed.attempt or cmd.attempts + 1
        cmd.retry_at = attempt_failed.retry_at
    elif t is EventType.STEP_DISPATCHED:
        cmd.dispatched = True
        cmd.task_id = None  # known once the task's outcome is journaled
    elif t is EventType.STEP_FAILED:
        fut = release(cmd)
        failed = event if isinstance(event, StepFailed) else read(StepFailed, data)
        if failed.attempts is not UNSET:
            cmd.attempts = failed.attempts
        err = failed.error
        fut.set_exception(
            StepFailedError(
                cmd.id.name, cmd.attempts, str(err.get("type", "")), str(err.get("message", ""))
            )
        )
    elif t is EventType.TIMER_STARTED:
        started = event if isinstance(event, TimerStarted) else read(TimerStarted, data)
        cmd.fire_at = started.fire_at
    elif t is EventType.TIMER_FIRED:
        fut = release(cmd)
        fut.set_result(None)
    elif t is EventType.SIGNAL_AWAITED:
        cmd.awaited = True
        awaited = event if isinstance(event, SignalAwaited) else read(SignalAwaited, data)
        cmd.deadline = awaited.deadline
    elif t is EventType.SIGNAL_RECEIVED:
        fut = release(cmd)
        try:
            received = event if isinstance(event, SignalReceived) else read(SignalReceived, data)
            value = _decode(received.payload, cmd, "payload")
        except Exception as exc:
            fut.set_exception(exc)
        else:
            fut.set_result(value)
    elif t is EventType.SIGNAL_TIMED_OUT:
        fut = release(cmd)
        fut.set_exception(SignalTimeoutError(cmd.id.name, float(cmd.timeout or 0.0)))
    elif t in CHILD_EVENTS:
        _apply_child(cmd, entry, event if event is not None else decode(t, data), release)


def _decode(raw: bytes, cmd: Command, what: str) -> Any:
    """Decode a journaled value to the type the command expects."""
    try:
        return codec.decode(raw, cmd.result_type)
    except SerializationError:
        # Decode again for the error message only: building it costs more
        # than the decode on the hot path.
        return codec.decode(raw, cmd.result_type, what=f"{what} of {cmd.id.describe()}")


def _apply_child(
    cmd: Command,
    entry: JournalEntry,
    event: Event,
    release: Callable[[Command], asyncio.Future[Any]],
) -> None:
    """A child command's events: started resolves ``start_child``, an outcome the result."""
    assert isinstance(event, ChildStarted | ChildCompleted | ChildFailed | ChildCancelled)
    child_id = event.child_run_id or cmd.child_run_id or ""
    cmd.child_run_id = child_id
    if isinstance(event, ChildStarted):
        if cmd.started is not None and not cmd.started.done():
            cmd.started.set_result(child_id)
        return
    release(cmd)
    exc: BaseException | None = None
    if isinstance(event, ChildCompleted):
        try:
            value = codec.decode(
                event.result, cmd.result_type, what=f"result of {cmd.id.describe()}"
            )
        except Exception as dec_exc:
            exc = dec_exc
        else:
            cmd.future.set_result(value)
    elif isinstance(event, ChildFailed):
        err = event.error
        exc = ChildWorkflowError(
            child_id, cmd.id.name, str(err.get("type", "")), str(err.get("message", ""))
        )
    else:
        exc = ChildWorkflowCancelled(child_id, cmd.id.name)
    if exc is not None:
        cmd.future.set_exception(exc)
        cmd.future.exception()  # a handle whose result nobody awaits: no "never retrieved"
    if cmd.started is not None and not cmd.started.done():
        # It never started (id taken, too deep): start_child raises the error.
        cmd.started.set_exception(exc or ChildWorkflowError(child_id, cmd.id.name, "", ""))
