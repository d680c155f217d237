"""Functions workflow code calls: durable sleep, signals, deterministic values.

Each is journaled when called inside a workflow. Outside a workflow they
behave like their ordinary counterparts where that makes sense (``sleep`` is
``asyncio.sleep``, ``now`` is the wall clock) and raise
:class:`keel.errors.WorkflowError` where it does not (``wait_for_signal``).
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import random as _random
import threading
import uuid as _uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, overload

from keel.core import names
from keel.core.events import CommandKind
from keel.core.replay import current_execution
from keel.errors import ConfigurationError, WorkflowError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StepInfo:
    """What a running step knows about itself.

    ``idempotency_key`` is stable across retries and crashes of this step in
    this run: hand it to external systems so a repeated attempt is recognised.
    ``cancel_requested`` turns true when the run's cancellation discards this
    attempt, or when the worker has lost the run's lease (another worker may
    be running the step): its result will not be used; a long step may check
    it and stop.
    """

    run_id: str
    step: str
    attempt: int
    idempotency_key: str
    # A threading.Event so that sync steps on the thread pool see it too.
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)
    # Whether the lease the attempt runs under has run out (a read, safe on any
    # thread): a thread resumed after a pause sees it before any heartbeat runs.
    _expired: Callable[[], bool] | None = field(default=None, repr=False, compare=False)

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set() or (self._expired is not None and self._expired())


def discard_attempt(info: StepInfo) -> None:
    """Tell a running attempt that cancellation discarded it (worker side)."""
    info._cancel.set()


_step_info: contextvars.ContextVar[StepInfo | None] = contextvars.ContextVar(
    "keel_step_info", default=None
)


def current_step() -> StepInfo | None:
    """The :class:`StepInfo` of the step running in this context, if any."""
    return _step_info.get()


def cancel_requested() -> bool:
    """Whether the code calling it is being cancelled.

    In a step: the run's cancellation discarded this attempt (stop early; the
    result will not be used). In workflow code: the run's cancel request has
    reached the workflow (replay-stable, so it may steer cleanup). Elsewhere
    ``False``.
    """
    info = _step_info.get()
    if info is not None:
        return info.cancel_requested
    execution = current_execution()
    return execution is not None and execution.cancel_requested


def in_workflow() -> bool:
    """Whether the caller is workflow code running under Keel."""
    return current_execution() is not None


def _seconds(duration: float | timedelta, what: str) -> float:
    seconds = duration.total_seconds() if isinstance(duration, timedelta) else duration
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
        or seconds < 0
    ):
        raise ConfigurationError(
            f"{what} must be a finite number of seconds >= 0, not {duration!r}"
        )
    return float(seconds)


async def sleep(duration: float | timedelta) -> None:
    """Durable sleep: survives worker restarts; long sleeps free the worker."""
    seconds = _seconds(duration, "sleep duration")
    execution = current_execution()
    if execution is None:
        await asyncio.sleep(seconds)
        return
    cmd = execution.issue(CommandKind.SLEEP, "sleep", duration=seconds)
    await cmd.future


@overload
async def wait_for_signal(name: str, *, timeout: float | timedelta | None = None) -> Any: ...


@overload
async def wait_for_signal(
    name: str, *, type: type[T], timeout: float | timedelta | None = None
) -> T: ...


async def wait_for_signal(
    name: str, *, type: Any = Any, timeout: float | timedelta | None = None
) -> Any:
    """Wait for the next signal called ``name`` and return its payload.

    Signals sent before the wait are buffered; several with the same name are
    received in the order they were sent. With ``timeout`` (seconds), raises
    :class:`keel.SignalTimeoutError` if none arrives in time. ``type`` decodes
    the payload (e.g. a dataclass).
    """
    names.name(name, "signal name", hash_ok=False)  # as Client.signal checks it
    seconds = None if timeout is None else _seconds(timeout, "signal timeout")
    execution = current_execution()
    if execution is None:
        raise WorkflowError("wait_for_signal() can only be used inside a workflow")
    cmd = execution.issue(CommandKind.SIGNAL, name, result_type=type, timeout=seconds)
    return await cmd.future


def now() -> datetime:
    """Current time (UTC, aware); inside a workflow, journaled so replay sees the same."""
    execution = current_execution()
    if execution is None:
        return datetime.now(UTC)
    value: datetime = execution.immediate(CommandKind.NOW, datetime, execution.live.now)
    return value


def uuid4() -> _uuid.UUID:
    """A random UUID; inside a workflow, journaled so replay sees the same."""
    execution = current_execution()
    if execution is None:
        return _uuid.uuid4()
    value: _uuid.UUID = execution.immediate(CommandKind.UUID4, _uuid.UUID, execution.live.uuid4)
    return value


def random() -> float:
    """A float in [0, 1); inside a workflow, journaled so replay sees the same."""
    execution = current_execution()
    if execution is None:
        return _random.random()
    value: float = execution.immediate(CommandKind.RANDOM, float, execution.live.random)
    return value


def patched(name: str) -> bool:
    """Whether this run takes the new code path of the change called ``name``.

    Change workflow code in place without breaking runs in flight::

        if keel.patched("tax-v2"):
            total = await add_tax_v2(order)   # new runs
        else:
            total = await add_tax(order)      # runs recorded before the change

    The first call in a run decides: live it journals a marker and returns
    True; on replay it returns True where the run recorded the marker and
    False for runs recorded before the patch. Later calls with the same name
    return the same answer, so one change may be checked at several places.
    A name marks one change: reusing it for another (earlier) change is caught
    on replay with :class:`keel.PatchMismatchError`. Outside a workflow: True.
    """
    _check_patch_name(name)
    execution = current_execution()
    if execution is None:
        return True
    return execution.patch(name)


def deprecate_patch(name: str) -> None:
    """Retire patch ``name`` once no run still needs its old code path.

    Replaces ``patched(name)`` after the old branch is deleted: runs that
    recorded the marker still replay, and new runs record nothing. Remove the
    call when the runs that carry the marker have finished.
    """
    _check_patch_name(name)
    execution = current_execution()
    if execution is not None:
        execution.patch(name, deprecated=True)


def _check_patch_name(name: object) -> None:
    if not isinstance(name, str) or not name or "#" in name or len(name) > 200:
        raise ConfigurationError(
            f"patch name must be a non-empty string without '#' (at most 200 chars): {name!r}"
        )


def side_effect(fn: Callable[[], T | Awaitable[T]], *, name: str | None = None) -> Awaitable[T]:
    """Run ``fn`` once and journal its result; replay returns the journaled value.

    ``fn`` may be sync or async; it is not retried. Await the result.
    """
    if not callable(fn):
        raise ConfigurationError(f"side_effect needs a callable, not {fn!r}")
    execution = current_execution()
    if execution is None:

        async def direct() -> T:
            value = fn()
            if asyncio.iscoroutine(value) or isinstance(value, Awaitable):
                return await value
            return value

        return direct()
    from keel.core import codec
    from keel.core.retry import RetryPolicy

    label = str(name or getattr(fn, "__qualname__", None) or "side_effect").replace("#", "_")
    if "<lambda>" in label:
        label = "side_effect"
    cmd = execution.issue(
        CommandKind.SIDE_EFFECT,
        label,
        result_type=codec.return_type(fn),
        target=_SideEffect(fn, RetryPolicy(max_attempts=1)),
    )
    return cmd.future


@dataclass(frozen=True, slots=True)
class _SideEffect:
    """What the worker runs for a side_effect command (no retries)."""

    fn: Callable[[], Any]
    retry: Any

    @property
    def name(self) -> str:
        return "side_effect"

    @property
    def is_async(self) -> bool:
        import inspect

        return inspect.iscoroutinefunction(self.fn)
