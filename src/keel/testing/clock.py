"""A clock for tests that moves only when told to (skipped time).

Give the same :class:`TestClock` to the store (``MemoryStore(clock=c.now)``,
``SQLiteStore(path, clock=c.now)``) and to the worker (``Worker(store,
clock=c)``): durable sleeps, signal timeouts, retry backoff, schedules and
lease expiry are then all measured on it, and :meth:`TestClock.advance` runs an
hour of workflow time at once. :class:`keel.testing.TestEnv` wires it up and
moves it for you.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from keel.errors import ConfigurationError

__all__ = ["DEFAULT_START", "TestClock", "seconds_of"]

#: Where a test clock starts unless told otherwise: a fixed moment, so fire
#: times, run ids of schedule ticks and ``keel.now()`` are the same on every run
#: of a test. (A Monday, midnight UTC.)
DEFAULT_START = datetime(2030, 1, 7, tzinfo=UTC)


def seconds_of(
    seconds: float | timedelta = 0.0,
    *,
    minutes: float = 0.0,
    hours: float = 0.0,
    days: float = 0.0,
) -> float:
    """The sum as seconds; a negative total is a :class:`ConfigurationError`
    (time never runs backwards)."""
    if isinstance(seconds, timedelta):
        seconds = seconds.total_seconds()
    total = float(seconds) + minutes * 60.0 + hours * 3600.0 + days * 86400.0
    if not total >= 0:  # also NaN
        raise ConfigurationError(f"time moves forward only: cannot advance by {total!r}s")
    return total


class TestClock:
    """Workflow time that stands still until :meth:`advance` (or
    :meth:`advance_to`) moves it; a :class:`keel.worker.clock.Clock`.

    ``start`` is an aware ``datetime`` or epoch seconds (default
    :data:`DEFAULT_START`). :meth:`sleep` returns once the clock has been moved
    past its deadline; moving it also calls the callbacks given to
    :meth:`watch` (a worker looks for due runs and schedules at once).
    """

    __test__ = False  # not a pytest test class, whatever its name says

    def __init__(self, start: datetime | float = DEFAULT_START) -> None:
        if isinstance(start, datetime):
            if start.tzinfo is None:
                raise ConfigurationError("TestClock(start=...) needs an aware datetime")
            start = start.timestamp()
        self._now = float(start)
        self._lock = threading.Lock()
        self._order = itertools.count()
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._watchers: dict[int, Callable[[], None]] = {}

    # --- the Clock protocol -------------------------------------------------------------
    def now(self) -> float:
        """Seconds since the epoch, on this clock."""
        return self._now

    async def sleep(self, seconds: float) -> None:
        """Until the clock has been moved on by ``seconds`` (at once if ``<= 0``)."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), fut))
        await fut  # cancelled: the entry stays until its deadline passes, then is dropped

    def watch(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` after every move of the clock; returns the unwatch function."""
        key = next(self._order)
        self._watchers[key] = callback

        def unwatch() -> None:
            self._watchers.pop(key, None)

        return unwatch

    # --- moving it ------------------------------------------------------------------------
    def datetime_now(self) -> datetime:
        """:meth:`now` as an aware UTC ``datetime``."""
        return datetime.fromtimestamp(self._now, UTC)

    def advance(
        self,
        seconds: float | timedelta = 0.0,
        *,
        minutes: float = 0.0,
        hours: float = 0.0,
        days: float = 0.0,
    ) -> None:
        """Move the clock on at once by the sum of the arguments."""
        self.advance_to(self._now + seconds_of(seconds, minutes=minutes, hours=hours, days=days))

    def advance_to(self, when: datetime | float) -> None:
        """Move the clock to ``when`` (an aware ``datetime`` or epoch seconds; not
        earlier than now), wake the sleepers it passed, and tell the watchers."""
        at = when.timestamp() if isinstance(when, datetime) else float(when)
        if not at >= self._now:
            raise ConfigurationError(
                f"time moves forward only: {at!r} is before the clock's {self._now!r}"
            )
        due: list[asyncio.Future[None]] = []
        with self._lock:
            self._now = at
            while self._sleepers and self._sleepers[0][0] <= at:
                due.append(heapq.heappop(self._sleepers)[2])
        for fut in due:
            loop = fut.get_loop()
            if not loop.is_closed():
                loop.call_soon_threadsafe(_wake, fut)
        for callback in list(self._watchers.values()):
            callback()

    def next_deadline(self) -> float | None:
        """The earliest deadline of a :meth:`sleep` still waiting, if any."""
        with self._lock:
            while self._sleepers and self._sleepers[0][2].done():
                heapq.heappop(self._sleepers)  # cancelled sleeps
            return self._sleepers[0][0] if self._sleepers else None

    def __repr__(self) -> str:
        return f"TestClock({self.datetime_now().isoformat()})"


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
