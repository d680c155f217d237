"""One step attempt as the run's driver sees it: journal how it ended."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

from keel.core import codec
from keel.core import journal as jr
from keel.core.commands import Command
from keel.core.events import CommandKind, EventType
from keel.core.replay import Execution
from keel.errors import SerializationError, error_info
from keel.worker.executor import StoredResult


def record_attempt(
    ex: Execution,
    cmd: Command,
    task: asyncio.Task[Any],
    attempt: int,
    clock_now: Callable[[], float],
) -> None:
    """Journal the finished attempt ``task`` of ``cmd``: its result, a retry
    (``step_attempt_failed`` with the retry time) or the step's failure."""
    exc = task.exception() if not task.cancelled() else asyncio.CancelledError()
    completed = (
        EventType.STEP_COMPLETED if cmd.id.kind is CommandKind.STEP else EventType.SIDE_EFFECT
    )
    field_name = "result" if completed is EventType.STEP_COMPLETED else "value"
    if exc is None:
        reused = False
        try:
            value = task.result()
            if isinstance(value, StoredResult):
                data, reused = value.data, value.reused
            else:
                data = codec.encode(value, what=f"result of {cmd.id.describe()}")
        except SerializationError as enc_exc:
            _failed(ex, cmd, attempt, enc_exc)
            return
        extra = {"reused": True, "idempotency_key": cmd.idempotency_key} if reused else {}
        ex.record(
            completed,
            cmd,
            jr.envelope(
                **{field_name: jr.raw(data)}, args_hash=cmd.args_hash, attempt=attempt, **extra
            ),
        )
        return
    if isinstance(exc, SerializationError):  # a result that cannot be stored: no retry
        _failed(ex, cmd, attempt, exc)
        return
    policy = cmd.target.retry
    if isinstance(exc, Exception) and policy.should_retry(attempt, exc):
        retry_at = clock_now() + policy.delay(attempt, random.random())
        ex.record(
            EventType.STEP_ATTEMPT_FAILED,
            cmd,
            jr.envelope(
                attempt=attempt, error=error_info(exc), retry_at=retry_at, args_hash=cmd.args_hash
            ),
        )
    else:
        _failed(ex, cmd, attempt, exc)


def _failed(ex: Execution, cmd: Command, attempt: int, exc: BaseException) -> None:
    ex.record(
        EventType.STEP_FAILED,
        cmd,
        jr.envelope(attempts=attempt, error=error_info(exc), args_hash=cmd.args_hash),
    )
