"""Dispatched steps (``@step(queue=...)``): dispatch one as a task, reuse a
result stored under its idempotency key, journal the outcome a task worker
stored on the task row."""

from __future__ import annotations

import msgspec

from keel.core import codec
from keel.core.commands import Command
from keel.core.events import (
    UNSET,
    CommandKind,
    ErrorInfo,
    StepCompleted,
    StepDispatched,
    StepFailed,
    step_input,
)
from keel.core.facts import value_digest
from keel.errors import KeelError, error_info
from keel.store.base import NewTask, TaskRecord
from keel.worker.actions import Dispatch, Planned, RecordEvent, StoreKeyed, WakeOnTask


def is_queued(cmd: Command) -> bool:
    """Whether ``cmd`` is a step that runs as a task of a queue, not in this worker."""
    return cmd.id.kind is CommandKind.STEP and getattr(cmd.target, "queue", None) is not None


def plan_dispatch(cmd: Command, stored: bytes | None) -> list[Planned]:
    """A queued step not dispatched yet. ``stored``: the result an earlier
    completion stored under its idempotency key (then it is journaled as the
    step's result and nothing is dispatched), as for a local keyed step."""
    if stored is not None:
        return [_reused(cmd, stored)]
    target = cmd.target
    assert cmd.args is not None  # steps always carry their encoded arguments
    recorded, size = step_input(cmd.args)
    dispatched = StepDispatched(
        queue=target.queue,
        priority=target.priority,
        args_hash=cmd.args_hash,
        input=recorded,
        input_size=size,
    )
    task = NewTask(
        command=cmd.key,
        step=cmd.id.name,
        queue=target.queue,
        priority=target.priority,
        args=cmd.args,
        max_attempts=target.retry.max_attempts,
    )
    return [RecordEvent(cmd, dispatched), Dispatch((task,))]


def plan_task(cmd: Command, task: TaskRecord | None, stored: bytes | None) -> list[Planned]:
    """A dispatched step: journal its task's result or failure if it has one,
    else wait for the task to end.

    ``stored``: for a step called with an idempotency key, the result stored
    under the key. A completed task's result is stored there first (the task's
    own, or a concurrent completion's that was stored first: concurrent
    completions with one key converge on it), then journaled.
    """
    if task is None:
        # The journal says dispatched but the task is gone (deleted by hand?):
        # fail the step rather than wait forever.
        exc = KeelError(f"the task of {cmd.id.describe()} is missing from the store")
        missing = StepFailed(attempts=cmd.attempts, error=error_info(exc), args_hash=cmd.args_hash)
        return [RecordEvent(cmd, missing)]
    if task.state == "completed":
        result = task.result if task.result is not None else b"null"
        reused = False
        if cmd.idempotency_key is not None:
            if stored is None:
                max_age = cmd.target.key_max_age
                return [StoreKeyed(cmd.id.name, cmd.idempotency_key, result, max_age)]
            if stored != result:
                result, reused = stored, True
        completed = StepCompleted(
            result=msgspec.Raw(result),
            args_hash=cmd.args_hash,
            attempt=task.attempt,
            task_id=task.task_id,
            reused=True if reused else UNSET,
            idempotency_key=cmd.idempotency_key if reused else UNSET,
            digest=value_digest(result),
        )
        return [RecordEvent(cmd, completed)]
    if task.state == "failed":
        failed = StepFailed(
            attempts=min(task.attempt, task.max_attempts),
            error=_task_error(task),
            args_hash=cmd.args_hash,
            task_id=task.task_id,
        )
        return [RecordEvent(cmd, failed)]
    return [WakeOnTask(cmd.key)]


def _reused(cmd: Command, stored: bytes) -> RecordEvent:
    recorded, size = step_input(cmd.args)  # the step's first (and only) event
    completed = StepCompleted(
        result=msgspec.Raw(stored),
        args_hash=cmd.args_hash,
        attempt=1,
        reused=True,
        idempotency_key=cmd.idempotency_key,
        digest=value_digest(stored),
        input=recorded,
        input_size=size,
    )
    return RecordEvent(cmd, completed)


def _task_error(task: TaskRecord) -> ErrorInfo:
    """The error info a task worker stored (``type``/``message``/``traceback``)."""
    fallback = {"type": "keel.errors.KeelError", "message": "the dispatched step failed"}
    if task.error is None:
        return fallback
    try:
        info = codec.decode(task.error)
    except Exception:
        return {**fallback, "message": task.error.decode("utf-8", "replace")}
    return info if isinstance(info, dict) else {**fallback, "message": str(info)}
