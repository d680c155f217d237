"""Runs one attempt of a step: async on the worker loop, sync on a thread pool."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from keel.core import codec
from keel.errors import StepTimeoutError
from keel.observe import metrics, tracing
from keel.store.ports import Store
from keel.workflow.context import StepInfo, _step_info


async def run_attempt(
    target: Any,
    args: bytes | None,
    info: StepInfo,
    pool: Executor,
    leased: Callable[[], bool] | None = None,
) -> Any:
    """Call the step once with its decoded arguments; return its raw result.

    Run it as a task whose context holds the step's :class:`StepInfo` (see
    :func:`start_attempt`), so ``keel.current_step()`` works in the step.

    A per-attempt timeout raises :class:`StepTimeoutError`. A sync step that
    times out keeps running on its thread (Python cannot stop a thread); its
    result is discarded.

    ``leased`` is asked before every resumption of an async step's body; once
    it says no, the body gets :class:`asyncio.CancelledError` instead.
    """
    fn = target.fn
    if args is not None:
        call_args, call_kwargs = codec.decode_args(fn, args, what=f"step {info.step!r}")
    else:
        call_args, call_kwargs = (), {}
    timeout = getattr(target.retry, "timeout", None)
    awaitable: Awaitable[Any]
    if target.is_async:
        coro = fn(*call_args, **call_kwargs)
        awaitable = coro if leased is None else _Fenced(coro, leased)
    else:
        ctx = contextvars.copy_context()  # carries the step info onto the thread
        loop = asyncio.get_running_loop()
        awaitable = loop.run_in_executor(pool, lambda: ctx.run(fn, *call_args, **call_kwargs))
    if timeout is None:
        return await awaitable
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        raise StepTimeoutError(
            f"step {info.step!r} attempt {info.attempt} timed out after {timeout:g}s"
        ) from None


class _Fenced:
    """An async step's coroutine, resumed only while the lease holds.

    The heartbeat finds a lost lease only when it next runs; after the process
    was paused (SIGSTOP) every due timer fires at once, and a step whose timer
    comes first would carry on with its side effects. This asks first, each
    time the body would resume, and cancels the body instead.
    """

    __slots__ = ("_coro", "_leased")

    def __init__(self, coro: Coroutine[Any, Any, Any], leased: Callable[[], bool]) -> None:
        self._coro = coro
        self._leased = leased

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, leased = self._coro, self._leased
        value: Any = None
        error: BaseException | None = None
        while True:
            if error is None and not leased():
                error = asyncio.CancelledError("the run's lease was lost")
            try:
                if error is None:
                    step = coro.send(value)
                else:
                    step, error = coro.throw(error), None
            except StopIteration as done:
                return done.value
            try:
                value = yield step
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # the task's cancel(), among others
                error = exc


@dataclass(frozen=True, slots=True)
class Keyed:
    """Where a keyed step's result is stored: ``(scope, key)`` in ``store``,
    reused while younger than ``max_age`` seconds (store clock; ``None``: any age)."""

    store: Store
    scope: str
    key: str
    max_age: float | None = None


@dataclass(frozen=True, slots=True)
class StoredResult:
    """An encoded step result kept under a user idempotency key."""

    data: bytes
    reused: bool  # True: an earlier completion's result; this attempt did not produce it


async def run_keyed_attempt(
    target: Any,
    args: bytes | None,
    info: StepInfo,
    pool: Executor,
    keyed: Keyed,
    leased: Callable[[], bool] | None = None,
) -> StoredResult:
    """An attempt of a step called with an idempotency key.

    A result stored under ``(scope, key)`` by any earlier completion (no older
    than ``max_age``) is reused without running the body; otherwise the body
    runs and its result is stored (replacing an expired one), unless a
    concurrent completion stored one first, whose result then wins. Stored
    before it is journaled: a crash in between reuses it next time.
    """
    keys, scope, key, max_age = keyed.store.keys, keyed.scope, keyed.key, keyed.max_age
    stored = await keys.get(scope, key, max_age)
    if stored is not None:
        return StoredResult(stored, reused=True)
    value = await run_attempt(target, args, info, pool, leased)
    data = codec.encode(value, what=f"result of step {info.step!r}")
    winner = await keys.put(scope, key, data, max_age)
    return StoredResult(winner, reused=winner != data)


async def _attempt_then(
    target: Any,
    args: bytes | None,
    info: StepInfo,
    pool: Executor,
    on_done: Callable[[], None],
    keyed: Keyed | None,
    leased: Callable[[], bool] | None,
    workflow: str,
    traced: bool,
) -> Any:
    started = time.perf_counter()
    # The attempt's span (tracing on), current in this task's own context.
    span = tracing.begin_step(info.run_id, workflow, info.step, info.attempt) if traced else None
    outcome, error = "cancelled", None  # until it returns or raises an Exception
    try:
        value = await _attempt(target, args, info, pool, keyed, leased)
        outcome = "ok"
        return value
    except BaseException as exc:
        outcome, error = ("error" if isinstance(exc, Exception) else "cancelled"), exc
        raise
    finally:
        tracing.end_step(span, error)
        metrics.step_attempt_ended(workflow, info.step, time.perf_counter() - started, outcome)
        on_done()


async def _attempt(
    target: Any,
    args: bytes | None,
    info: StepInfo,
    pool: Executor,
    keyed: Keyed | None,
    leased: Callable[[], bool] | None,
) -> Any:
    if keyed is not None:
        return await run_keyed_attempt(target, args, info, pool, keyed, leased)
    return await run_attempt(target, args, info, pool, leased)


def start_attempt(
    target: Any,
    args: bytes | None,
    info: StepInfo,
    pool: Executor,
    on_done: Callable[[], None] | None = None,
    keyed: Keyed | None = None,
    leased: Callable[[], bool] | None = None,
    workflow: str = "",
) -> asyncio.Task[Any]:
    """Start one attempt as a task on the running loop, with ``info`` in its context.

    ``on_done`` is called by the task itself as its last act, however it ends:
    the task is done by the time any callback it schedules runs. That wakes a
    waiter one event-loop iteration sooner than a done-callback would.
    ``leased``: see :func:`run_attempt`. ``workflow``: the run's, for the
    attempt's span and metrics (see :mod:`keel.observe`).
    """
    ctx = contextvars.copy_context()
    ctx.run(_step_info.set, info)
    done = on_done or (lambda: None)
    traced = tracing.enabled()
    coro = _attempt_then(target, args, info, pool, done, keyed, leased, workflow, traced)
    return asyncio.get_running_loop().create_task(coro, context=ctx)
