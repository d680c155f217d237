"""Runs one attempt of a step: async on the worker loop, sync on a thread pool."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from keel.context import StepInfo, _step_info
from keel.core import codec
from keel.errors import StepTimeoutError


async def run_attempt(
    target: Any,
    args: bytes | None,
    info: StepInfo,
    pool: ThreadPoolExecutor,
) -> Any:
    """Call the step once with its decoded arguments; return its raw result.

    Run it as a task whose context holds the step's :class:`StepInfo` (see
    :func:`start_attempt`), so ``keel.current_step()`` works in the step.

    A per-attempt timeout raises :class:`StepTimeoutError`. A sync step that
    times out keeps running on its thread (Python cannot stop a thread); its
    result is discarded.
    """
    fn = target.fn
    if args is not None:
        call_args, call_kwargs = codec.decode_args(fn, args, what=f"step {info.step!r}")
    else:
        call_args, call_kwargs = (), {}
    timeout = getattr(target.retry, "timeout", None)
    awaitable: Awaitable[Any]
    if target.is_async:
        awaitable = fn(*call_args, **call_kwargs)
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


def start_attempt(
    target: Any, args: bytes | None, info: StepInfo, pool: ThreadPoolExecutor
) -> asyncio.Task[Any]:
    """Start one attempt as a task on the running loop, with ``info`` in its context."""
    ctx = contextvars.copy_context()
    ctx.run(_step_info.set, info)
    return asyncio.get_running_loop().create_task(
        run_attempt(target, args, info, pool), context=ctx
    )
