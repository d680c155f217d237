"""A deterministic asyncio event loop for workflow code.

Workflow code runs on this loop, never on the worker's real loop. It has no
clock, no I/O and no threads: it only runs ready callbacks, in FIFO order,
until none is left ("quiescence"). Futures, tasks and ``asyncio.gather`` work
as usual, so a workflow may fan out with ``gather``; anything that needs real
time or I/O raises :class:`keel.errors.WorkflowError` with a hint.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
from asyncio import events
from collections.abc import Callable, Coroutine, Generator
from typing import Any, NoReturn, TypeVar

from keel.errors import WorkflowError

T = TypeVar("T")


class DeterministicLoop(asyncio.AbstractEventLoop):
    """Runs workflow callbacks in a fixed order, only when asked to."""

    def __init__(self) -> None:
        self._ready: collections.deque[asyncio.Handle] = collections.deque()
        self._running = False
        self._closed = False
        self.unhandled: list[dict[str, Any]] = []

    # --- what tasks and futures use -------------------------------------------------
    def call_soon(  # type: ignore[override]
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        handle = asyncio.Handle(callback, args, self, context)
        self._ready.append(handle)
        return handle

    def call_soon_threadsafe(  # type: ignore[override]
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        self._forbidden("threads")

    def call_later(self, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:  # type: ignore[override]
        self._forbidden("asyncio timers (asyncio.sleep, wait_for)")

    def call_at(self, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:  # type: ignore[override]
        self._forbidden("asyncio timers (asyncio.sleep, wait_for)")

    def time(self) -> float:
        # asyncio.timeout()/wait_for read the clock; time has no meaning here.
        self._forbidden("the event loop clock (asyncio.timeout, wait_for)")

    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.Future(loop=self)

    def create_task(
        self,
        coro: Coroutine[Any, Any, T] | Generator[Any, None, T],
        *,
        name: str | None = None,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[T]:
        return asyncio.Task(coro, loop=self, name=name, context=context)

    def get_debug(self) -> bool:
        return False

    def is_running(self) -> bool:
        return self._running

    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._ready.clear()
        self._closed = True

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        # e.g. "Task was destroyed but it is pending" when an evicted execution
        # is garbage-collected: expected, kept only for diagnosis.
        self.unhandled.append(context)

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        self.unhandled.append(context)

    def get_exception_handler(self) -> None:
        return None

    # --- driving ---------------------------------------------------------------------
    def run_until_quiescent(self) -> None:
        """Run ready callbacks until none is left.

        The loop is installed as the thread's running loop for the duration, so
        ``asyncio.get_running_loop()`` and ``gather`` inside workflow code see it,
        and the caller's loop is restored afterwards.
        """
        outer = events._get_running_loop()
        events._set_running_loop(self)
        self._running = True
        try:
            while self._ready:
                handle = self._ready.popleft()
                if not handle.cancelled():
                    handle._run()
        finally:
            self._running = False
            events._set_running_loop(outer)

    def _forbidden(self, what: str) -> NoReturn:
        raise WorkflowError(
            f"workflow code cannot use {what}: use keel.sleep(), keel.wait_for_signal() "
            "or a step for anything that waits on real time or I/O"
        )
