"""One step attempt as the run's driver sees it: journal how it ended."""

from __future__ import annotations

import asyncio
import logging
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

log = logging.getLogger("keel.worker")


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
            _failed(ex, cmd, attempt, enc_exc, "not retried")
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
    policy = cmd.target.retry
    if isinstance(exc, SerializationError):  # a result that cannot be stored: no retry
        _failed(ex, cmd, attempt, exc, "not retried")
        return
    if isinstance(exc, Exception) and policy.should_retry(attempt, exc):
        delay = policy.delay(attempt, random.random())
        retry_at = clock_now() + delay
        _log_failed(ex, cmd, attempt, exc, "retrying in %.3gs", delay)
        ex.record(
            EventType.STEP_ATTEMPT_FAILED,
            cmd,
            jr.envelope(
                attempt=attempt, error=error_info(exc), retry_at=retry_at, args_hash=cmd.args_hash
            ),
        )
    else:
        _failed(
            ex,
            cmd,
            attempt,
            exc,
            "no attempts left" if attempt >= policy.max_attempts else "not retryable",
        )


def _failed(ex: Execution, cmd: Command, attempt: int, exc: BaseException, why: str) -> None:
    _log_failed(ex, cmd, attempt, exc, why)
    ex.record(
        EventType.STEP_FAILED,
        cmd,
        jr.envelope(attempts=attempt, error=error_info(exc), args_hash=cmd.args_hash),
    )


def _log_failed(
    ex: Execution, cmd: Command, attempt: int, exc: BaseException, then: str, *args: object
) -> None:
    """One WARNING per failed attempt; formatted only if the level is enabled."""
    log.warning(
        "run %s (workflow %s): step %r attempt %d/%d failed: %s: %s; " + then,
        ex.run_id,
        ex.workflow_name,
        cmd.id.name,
        attempt,
        cmd.target.retry.max_attempts,
        type(exc).__name__,
        exc,
        *args,
    )
