"""Dispatched steps, as the run's driver sees them: record the dispatch, then
journal the outcome a task worker stored on the task row."""

from __future__ import annotations

import msgspec

from keel.core import codec
from keel.core.commands import Command
from keel.core.events import UNSET, ErrorInfo, StepCompleted, StepDispatched, StepFailed
from keel.core.replay import Execution
from keel.errors import KeelError, error_info
from keel.store.base import NewTask, TaskRecord
from keel.store.ports import Store


def record_dispatch(ex: Execution, cmd: Command) -> NewTask:
    """Journal ``step_dispatched`` for ``cmd``; return the task to insert with it."""
    target = cmd.target
    assert cmd.args is not None  # steps always carry their encoded arguments
    ex.record(
        cmd, StepDispatched(queue=target.queue, priority=target.priority, args_hash=cmd.args_hash)
    )
    return NewTask(
        command=cmd.key,
        step=cmd.id.name,
        queue=target.queue,
        priority=target.priority,
        args=cmd.args,
        max_attempts=target.retry.max_attempts,
    )


def record_reused(ex: Execution, cmd: Command, stored: bytes) -> None:
    """Journal a keyed step's result stored by an earlier completion: not dispatched."""
    ex.record(
        cmd,
        StepCompleted(
            result=msgspec.Raw(stored),
            args_hash=cmd.args_hash,
            attempt=1,
            reused=True,
            idempotency_key=cmd.idempotency_key,
        ),
    )


def record_task_outcome(
    ex: Execution, cmd: Command, task: TaskRecord | None, stored: bytes | None = None
) -> bool:
    """Journal the task's result or failure if it has one; ``False`` while it runs.

    ``stored``: for a step called with an idempotency key, the result stored
    under the key once the task completed (the task's own, or a concurrent
    completion's that was stored first).
    """
    if task is None:
        # The journal says dispatched but the task is gone (deleted by hand?):
        # fail the step rather than wait forever.
        exc = KeelError(f"the task of {cmd.id.describe()} is missing from the store")
        ex.record(
            cmd, StepFailed(attempts=cmd.attempts, error=error_info(exc), args_hash=cmd.args_hash)
        )
        return True
    cmd.task_id = task.task_id
    if task.state == "completed":
        result = task.result if task.result is not None else b"null"
        reused = False
        if stored is not None and stored != result:
            result, reused = stored, True
        ex.record(
            cmd,
            StepCompleted(
                result=msgspec.Raw(result),
                args_hash=cmd.args_hash,
                attempt=task.attempt,
                task_id=task.task_id,
                reused=True if reused else UNSET,
                idempotency_key=cmd.idempotency_key if reused else UNSET,
            ),
        )
        return True
    if task.state == "failed":
        ex.record(
            cmd,
            StepFailed(
                attempts=min(task.attempt, task.max_attempts),
                error=_task_error(task),
                args_hash=cmd.args_hash,
                task_id=task.task_id,
            ),
        )
        return True
    return False


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


async def reuse_keyed_result(store: Store, ex: Execution, cmd: Command) -> bool:
    """As for a local keyed step: journal an earlier completion's stored result
    (nothing is dispatched) and return ``True``, if there is one."""
    if cmd.idempotency_key is None:
        return False
    stored = await store.keys.get(cmd.id.name, cmd.idempotency_key)
    if stored is None:
        return False
    record_reused(ex, cmd, stored)
    return True


async def journal_task_outcome(store: Store, run_id: str, ex: Execution, cmd: Command) -> bool:
    """Journal the outcome of ``cmd``'s task if it has one; ``False`` while it runs."""
    task = await store.tasks.get(run_id, cmd.key)
    stored = None
    if task is not None and task.state == "completed" and cmd.idempotency_key is not None:
        # Stored before it is journaled, as for local keyed steps: concurrent
        # completions with one key converge on the first stored result.
        result = task.result if task.result is not None else b"null"
        stored = await store.keys.put(cmd.id.name, cmd.idempotency_key, result)
    return record_task_outcome(ex, cmd, task, stored)
