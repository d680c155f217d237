"""Replacing the body of a step for a while, in this process.

A worker runs a step by calling ``step.fn`` (on the loop if it is async, on a
step thread if not), and a task worker finds dispatched steps by name in the
registry, which holds the same :class:`~keel.workflow.definitions.StepDef`.
So swapping ``fn`` on that object changes what every worker of this process
runs, and nothing in the workflow's code. Step fakes
(:mod:`keel.testing.fakes`) build on this; the crash tester's execution
counters (:mod:`keel.testing.crash_counting`) swap ``fn`` the same way.

The replacement keeps the original's name, signature and annotations
(``functools.wraps``): the worker decodes a step's arguments through
``step.fn``'s signature, and the codec resolves annotations through
``__wrapped__``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any

from keel.errors import ConfigurationError
from keel.workflow.definitions import StepDef

#: What replaces a step's body: called with the step's decoded arguments; its
#: return value may be awaitable (an async fake), awaited as the step runs.
Body = Callable[..., Any]


def check_step(step: object, who: str) -> StepDef[Any, Any]:
    """``step`` if it is a ``@keel.step``, else a :class:`ConfigurationError`."""
    if not isinstance(step, StepDef):
        raise ConfigurationError(f"{who} needs a @keel.step (the decorated function), not {step!r}")
    return step


def as_body(step: StepDef[Any, Any], call: Body) -> Callable[..., Any]:
    """A function shaped like ``step``'s body (same sync/async kind and
    signature) that calls ``call`` instead."""
    original = step.fn
    if step.is_async:

        @functools.wraps(original)
        async def async_body(*args: Any, **kwargs: Any) -> Any:
            value = call(*args, **kwargs)
            if inspect.isawaitable(value):
                value = await value
            return value

        return async_body

    @functools.wraps(original)
    def sync_body(*args: Any, **kwargs: Any) -> Any:
        value = call(*args, **kwargs)
        if inspect.isawaitable(value):
            # An async fake of a sync step: a sync step runs on a step thread,
            # which has no event loop of its own.
            value = asyncio.run(_awaited(value))
        return value

    return sync_body


async def _awaited(value: Any) -> Any:
    return await value


@contextlib.contextmanager
def replaced_body(step: StepDef[Any, Any], body: Callable[..., Any]) -> Iterator[None]:
    """Run ``body`` instead of ``step``'s body inside the ``with`` (restored on
    exit, also on error). Nests: each exit puts back what its entry found."""
    previous = step.fn
    step.fn = body
    try:
        yield
    finally:
        step.fn = previous
