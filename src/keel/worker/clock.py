"""The clock a worker measures workflow time on.

Workflow time is what durable sleeps, signal timeouts, retry backoff,
schedules and leases are measured in. In production it is the wall clock
(:class:`SystemClock`); a test passes a clock that jumps
(:class:`keel.testing.TestClock`) to run hours of workflow time in
milliseconds. The store must read the same clock (``MemoryStore(clock=...)``,
``SQLiteStore(..., clock=...)``): PostgreSQL reads the server's, so a clock
that jumps cannot be used with it.

Waits for real I/O (polling the store's change feed, heartbeats, a step's own
timeout) stay on real time; a jump wakes them through :meth:`Clock.watch`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """Workflow time: read it, wait on it, and hear when it jumps."""

    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return once :meth:`now` has moved on by ``seconds`` (or more)."""
        ...

    def watch(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` (on the thread that moved the clock) each time the
        clock jumps; returns a function that stops watching."""
        ...


def _unwatch() -> None:
    return None


class SystemClock:
    """The wall clock: ``time.time`` and ``asyncio.sleep``; it never jumps."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def watch(self, callback: Callable[[], None]) -> Callable[[], None]:
        return _unwatch

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK = SystemClock()
