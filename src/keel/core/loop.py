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
import contextlib
import contextvars
from asyncio import events
from collections.abc import Callable, Coroutine, Generator, Iterator
from typing import Any, NoReturn, TypeVar

from keel.errors import WorkflowError

T = TypeVar("T")


class _Handle(asyncio.Handle):
    """A ready callback, built without :class:`asyncio.Handle`'s debug checks.

    Replay creates one per resumed await, so this is on the hottest path.
    """

    __slots__ = ()

    def __init__(
        self,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        loop: asyncio.AbstractEventLoop,
        context: contextvars.Context,
    ) -> None:
        self._callback = callback
        self._args = args
        self._loop = loop
        self._context = context
        self._cancelled = False
        self._repr = None
        self._source_traceback = None


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
        ctx = context if context is not None else contextvars.copy_context()
        handle = _Handle(callback, args, self, ctx)
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

        The loop is the thread's running loop meanwhile (see :meth:`installed`),
        so ``asyncio.get_running_loop()`` and ``gather`` inside workflow code see it.
        """
        if self._running:
            self.drain()
            return
        with self.installed():
            self.drain()

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Make this the thread's running loop for a whole replay, restoring the
        caller's loop afterwards: swapping it per event costs more than the event."""
        if self._running:
            yield
            return
        outer = events._get_running_loop()
        events._set_running_loop(self)
        self._running = True
        try:
            yield
        finally:
            self._running = False
            events._set_running_loop(outer)

    def drain(self) -> None:
        """Run ready callbacks until none is left; the loop must be installed."""
        ready = self._ready
        while ready:
            handle = ready.popleft()
            if handle._cancelled:
                continue
            try:
                handle._context.run(handle._callback, *handle._args)  # type: ignore[attr-defined]
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self.call_exception_handler(
                    {"message": "Exception in a workflow callback", "exception": exc}
                )

    def _forbidden(self, what: str) -> NoReturn:
        raise WorkflowError(
            f"workflow code cannot use {what}: use keel.sleep(), keel.wait_for_signal() "
            "or a step for anything that waits on real time or I/O"
        )
