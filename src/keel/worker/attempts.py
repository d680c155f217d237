"""One step attempt as the run's driver sees it: journal how it ended."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

import msgspec

from keel.core import codec
from keel.core.commands import Command
from keel.core.events import (
    UNSET,
    CommandKind,
    SideEffect,
    StepAttemptFailed,
    StepCompleted,
    StepFailed,
)
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
        if cmd.id.kind is not CommandKind.STEP:
            ex.record(
                cmd, SideEffect(value=msgspec.Raw(data), args_hash=cmd.args_hash, attempt=attempt)
            )
            return
        ex.record(
            cmd,
            StepCompleted(
                result=msgspec.Raw(data),
                args_hash=cmd.args_hash,
                attempt=attempt,
                reused=True if reused else UNSET,
                idempotency_key=cmd.idempotency_key if reused else UNSET,
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
            cmd,
            StepAttemptFailed(
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
    ex.record(cmd, StepFailed(attempts=attempt, error=error_info(exc), args_hash=cmd.args_hash))


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
