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

from keel.core import codec
from keel.core import journal as jr
from keel.core.commands import CHILD_EVENTS, HASHED_EVENTS, Command
from keel.core.events import EventType
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
    run_id: str, cmd: Command, entry: JournalEntry, carried: dict[str, str]
) -> jr.Envelope | None:
    """At a command's first journal event, compare its arguments hash with the
    recorded one; return the entry's parsed data if it was parsed.

    Compared here, not when the code issued the command, so that a reordering
    is reported as such rather than as changed arguments. ``carried`` holds
    the hashes of first events a snapshot dropped.
    """
    if not cmd.unchecked:
        return None
    cmd.unchecked = False
    env = None
    recorded = carried.get(cmd.key) if carried else None
    if recorded is None and entry.type in HASHED_EVENTS:
        env = jr.parse(entry.data)
        recorded = env.args_hash
    if recorded is not None and recorded != cmd.args_hash:
        raise NondeterminismError(
            run_id,
            entry.seq,
            f"{cmd.id.describe()} with arguments hash {recorded}",
            f"{cmd.id.describe()} with different arguments (hash {cmd.args_hash})",
        )
    return env


def apply_event(
    cmd: Command,
    entry: JournalEntry,
    env: jr.Envelope | None,
    release: Callable[[Command], asyncio.Future[Any]],
) -> None:
    """Apply ``entry`` (already checked to belong to ``cmd``'s kind) to ``cmd``.

    ``env`` is the entry's parsed data if the caller has it; ``release``
    removes ``cmd`` from the pending commands and returns the future to settle.
    """
    t, data = entry.type, entry.data
    if t is EventType.STEP_COMPLETED or t is EventType.SIDE_EFFECT:
        if env is None:
            env = jr.parse(data)
        raw = env.result if t is EventType.STEP_COMPLETED else env.value
        fut = release(cmd)
        try:
            value = _decode(raw, cmd, "result")
        except Exception as exc:
            fut.set_exception(exc)
        else:
            fut.set_result(value)
    elif t is EventType.STEP_ATTEMPT_FAILED:
        cmd.attempts = int(jr.field(data, "attempt", cmd.attempts + 1))
        cmd.retry_at = jr.field(data, "retry_at")
    elif t is EventType.STEP_DISPATCHED:
        cmd.dispatched = True
        task_id = jr.field(data, "task_id")
        cmd.task_id = int(task_id) if task_id is not None else None
    elif t is EventType.STEP_FAILED:
        fut = release(cmd)
        err = jr.field(data, "error", {}) or {}
        cmd.attempts = int(jr.field(data, "attempts", cmd.attempts))
        fut.set_exception(
            StepFailedError(
                cmd.id.name, cmd.attempts, str(err.get("type", "")), str(err.get("message", ""))
            )
        )
    elif t is EventType.TIMER_STARTED:
        cmd.fire_at = jr.field(data, "fire_at")
    elif t is EventType.TIMER_FIRED:
        fut = release(cmd)
        fut.set_result(None)
    elif t is EventType.SIGNAL_AWAITED:
        cmd.awaited = True
        cmd.deadline = jr.field(data, "deadline")
    elif t is EventType.SIGNAL_RECEIVED:
        fut = release(cmd)
        try:
            value = _decode(jr.parse(data).payload, cmd, "payload")
        except Exception as exc:
            fut.set_exception(exc)
        else:
            fut.set_result(value)
    elif t is EventType.SIGNAL_TIMED_OUT:
        fut = release(cmd)
        fut.set_exception(SignalTimeoutError(cmd.id.name, float(cmd.timeout or 0.0)))
    elif t in CHILD_EVENTS:
        _apply_child(cmd, entry, release)


def _decode(raw: bytes, cmd: Command, what: str) -> Any:
    """Decode a journaled value to the type the command expects."""
    try:
        return codec.decode(raw, cmd.result_type)
    except SerializationError:
        # Decode again for the error message only: building it costs more
        # than the decode on the hot path.
        return codec.decode(raw, cmd.result_type, what=f"{what} of {cmd.id.describe()}")


def _apply_child(
    cmd: Command, entry: JournalEntry, release: Callable[[Command], asyncio.Future[Any]]
) -> None:
    """A child command's events: started resolves ``start_child``, an outcome the result."""
    t, data = entry.type, entry.data
    child_id = str(jr.field(data, "child_run_id", cmd.child_run_id or ""))
    cmd.child_run_id = child_id
    if t is EventType.CHILD_STARTED:
        if cmd.started is not None and not cmd.started.done():
            cmd.started.set_result(child_id)
        return
    release(cmd)
    exc: BaseException | None = None
    if t is EventType.CHILD_COMPLETED:
        try:
            value = codec.decode(
                jr.raw_field(data, "result"),
                cmd.result_type,
                what=f"result of {cmd.id.describe()}",
            )
        except Exception as dec_exc:
            exc = dec_exc
        else:
            cmd.future.set_result(value)
    elif t is EventType.CHILD_FAILED:
        err = jr.field(data, "error", {}) or {}
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
