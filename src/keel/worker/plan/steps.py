"""Inline steps and side effects: when to run the next attempt, and what to
journal once an attempt has ended (its result, a retry, or the step's failure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

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
    UnsetType,
    step_input,
)
from keel.core.facts import value_digest
from keel.errors import SerializationError, error_info
from keel.worker.actions import (
    Planned,
    RecordEvent,
    ReportAttempt,
    StartAttempt,
    WaitUntil,
    WakeAt,
)
from keel.worker.step_runner import StoredResult

T = TypeVar("T")


def plan_attempt(cmd: Command, now: float, inline_wait: float) -> list[Planned]:
    """The next attempt of ``cmd``: now, after a retry delay waited here (if it is
    due within ``inline_wait`` seconds), or at a durable wake-up."""
    retry_at = cmd.retry_at
    if retry_at is not None and retry_at > now:
        if retry_at - now <= inline_wait:
            return [WaitUntil(cmd, "retry", retry_at)]
        return [WakeAt(retry_at)]
    return [StartAttempt(cmd, cmd.attempts + 1)]


@dataclass(slots=True)  # one per attempt, on the hot path: not frozen
class Ended:
    """How a step attempt ended: its return value, or what it raised (a
    cancelled attempt raised :class:`asyncio.CancelledError`)."""

    value: Any = None
    error: BaseException | None = None


def plan_attempt_ended(
    cmd: Command,
    attempt: int,
    ended: Ended,
    now: float,
    jitter: float,
    *,
    started_at: float | None = None,
    worker: str | None = None,
) -> list[RecordEvent | ReportAttempt]:
    """What to journal for attempt ``attempt`` of ``cmd``: its result, a retry
    (``step_attempt_failed`` with the retry time, from ``now`` on the worker's
    clock and the uniform draw ``jitter``) or the step's failure. A step's
    events record ``started_at`` (the attempt's start on the worker's clock) and
    ``worker`` (its lease owner) when given, for timelines."""
    ran = _Ran(_given(started_at), _given(worker), *_first_input(cmd))
    if ended.error is None:
        reused = False
        value = ended.value
        if isinstance(value, StoredResult):
            data, reused = value.data, value.reused
        else:
            try:
                data = codec.encode(value, what=f"result of {cmd.id.describe()}")
            except SerializationError as enc_exc:
                return _failed(cmd, attempt, enc_exc, "not retried", ran)
        if cmd.id.kind is not CommandKind.STEP:
            value = SideEffect(value=msgspec.Raw(data), args_hash=cmd.args_hash, attempt=attempt)
            return [RecordEvent(cmd, value)]
        completed = StepCompleted(
            result=msgspec.Raw(data),
            args_hash=cmd.args_hash,
            attempt=attempt,
            reused=True if reused else UNSET,
            idempotency_key=cmd.idempotency_key if reused else UNSET,
            started_at=ran.started_at,
            worker=ran.worker,
            digest=value_digest(data),
            input=ran.input,
            input_size=ran.input_size,
        )
        return [RecordEvent(cmd, completed)]
    exc = ended.error
    policy = cmd.target.retry
    if isinstance(exc, SerializationError):  # a result that cannot be stored: no retry
        return _failed(cmd, attempt, exc, "not retried", ran)
    if isinstance(exc, Exception) and policy.should_retry(attempt, exc):
        delay = policy.delay(attempt, jitter)
        failed = StepAttemptFailed(
            attempt=attempt,
            error=error_info(exc),
            retry_at=now + delay,
            args_hash=cmd.args_hash,
            started_at=ran.started_at,
            worker=ran.worker,
            input=ran.input,
            input_size=ran.input_size,
        )
        return [_report(cmd, attempt, exc, "retrying in %.3gs", delay), RecordEvent(cmd, failed)]
    why = "no attempts left" if attempt >= policy.max_attempts else "not retryable"
    return _failed(cmd, attempt, exc, why, ran)


@dataclass(frozen=True, slots=True)
class _Ran:
    """Where and when an attempt ran, as its step event records it, and the
    step's input when this is the step's first event."""

    started_at: float | UnsetType
    worker: str | UnsetType
    input: msgspec.Raw | UnsetType
    input_size: int | UnsetType


def _first_input(cmd: Command) -> tuple[msgspec.Raw | UnsetType, int | UnsetType]:
    """A step's input goes on its first event: the outcome of its first
    journaled attempt (no failed attempt is journaled before it)."""
    if cmd.attempts or cmd.id.kind is not CommandKind.STEP:
        return UNSET, UNSET
    return step_input(cmd.args)


def _given(value: T | None) -> T | UnsetType:
    return UNSET if value is None else value


def _failed(
    cmd: Command, attempt: int, exc: BaseException, why: str, ran: _Ran
) -> list[RecordEvent | ReportAttempt]:
    failed = StepFailed(
        attempts=attempt,
        error=error_info(exc),
        args_hash=cmd.args_hash,
        started_at=ran.started_at,
        worker=ran.worker,
        input=ran.input,
        input_size=ran.input_size,
    )
    return [_report(cmd, attempt, exc, why), RecordEvent(cmd, failed)]


def _report(
    cmd: Command, attempt: int, exc: BaseException, then: str, *args: object
) -> ReportAttempt:
    return ReportAttempt(cmd.id.name, attempt, cmd.target.retry.max_attempts, exc, then, args)
