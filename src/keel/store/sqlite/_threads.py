"""Threads that own the SQLite connections, so sqlite calls never block an event loop.

Each call captures the running loop and gets its result back through
``loop.call_soon_threadsafe``, so one store serves coroutines on any loop (tests
call ``asyncio.run`` repeatedly).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from keel.errors import StoreError

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]
_Outcome = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Any, BaseException | None]


class _Stop:
    __slots__ = ("future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
        self.loop = loop
        self.future = future


_Item = tuple[Op, asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


def wrap_error(exc: BaseException) -> BaseException:
    """sqlite3 errors surface as :class:`StoreError`; Keel's own errors pass through."""
    if isinstance(exc, sqlite3.Error):
        err = StoreError(f"SQLite error: {exc}")
        err.__cause__ = exc
        return err
    return exc


def _resolve_all(items: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for fut, result, exc in items:
        if fut.done():  # the caller was cancelled; the write may still have happened
            continue
        if exc is None:
            fut.set_result(result)
        else:
            fut.set_exception(exc)


def _deliver(outcomes: Iterable[_Outcome]) -> None:
    """Resolve futures on their own loops, one wake-up per loop."""
    by_loop: dict[
        asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, BaseException | None]]
    ] = {}
    for loop, fut, result, exc in outcomes:
        by_loop.setdefault(loop, []).append((fut, result, exc))
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
            loop.call_soon_threadsafe(_resolve_all, items)


def _settle(fut: concurrent.futures.Future[None], error: BaseException | None) -> None:
    """Resolve ``fut`` unless it is already resolved or was cancelled by its waiter."""
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(error)


class ChangeWaiters:
    """Futures of coroutines inside ``wait_for_change``, woken from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[asyncio.Future[None], asyncio.AbstractEventLoop] = {}
        self.added = threading.Event()  # lets the watcher sleep while nobody waits

    def add(self, loop: asyncio.AbstractEventLoop, fut: asyncio.Future[None]) -> None:
        with self._lock:
            self._waiters[fut] = loop
        self.added.set()

    def discard(self, fut: asyncio.Future[None]) -> None:
        with self._lock:
            self._waiters.pop(fut, None)

    def __bool__(self) -> bool:
        return bool(self._waiters)

    def notify(self) -> None:
        with self._lock:
            items = list(self._waiters.items())
            self._waiters.clear()
        _deliver((loop, fut, None, None) for fut, loop in items)


class DbThread:
    """One connection on one thread, draining a queue of operations.

    As the writer it runs every operation queued at the moment in one
    ``BEGIN IMMEDIATE ... COMMIT`` (group commit), each inside a SAVEPOINT so a
    failing operation rolls back only itself; results are delivered after the
    COMMIT, so nobody sees a write that could still be rolled back.
    """

    def __init__(
        self,
        name: str,
        connect: Callable[[], sqlite3.Connection],
        *,
        writer: bool,
        max_batch: int = 256,
        busy_timeout: float = 10.0,
    ) -> None:
        self._connect = connect
        self._busy_timeout = busy_timeout
        self._writer = writer
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Item | _Stop] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        #: Write transactions committed (one per group of operations).
        self.commits = 0
        #: Resolved once the connection is made (or failed to be made).
        self.ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the thread (in a write transaction if writer)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        with self._lock:  # no operation may slip in behind the stop marker
            if self._closed:
                raise StoreError("the store is closed")
            self._queue.put((fn, loop, fut))
        return await fut

    async def stop(self) -> None:
        """Finish queued operations, close the connection and end the thread."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._closed:  # already stopped, or the thread has ended
                return
            self._closed = True
            self._queue.put(_Stop(loop, fut))
        await fut
        # The thread resolved the future as its last act; this join is immediate.
        await asyncio.to_thread(self._thread.join)

    def _main(self) -> None:
        conn: sqlite3.Connection | None = None
        failure: BaseException | None = None
        stop: _Stop | None = None
        try:
            try:
                conn = self._connect()
            except Exception as exc:
                failure = wrap_error(exc)
            _settle(self.ready, failure)
            while stop is None:
                batch: list[_Item] = []
                item = self._queue.get()
                while True:
                    if isinstance(item, _Stop):
                        stop = item
                        break
                    batch.append(item)
                    if len(batch) >= self._max_batch:
                        break
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                if not batch:
                    continue
                if conn is None:
                    assert failure is not None
                    _deliver((loop, fut, None, failure) for _, loop, fut in batch)
                elif self._writer:
                    self._write(conn, batch)
                else:
                    self._read(conn, batch)
        finally:
            if conn is not None:
                conn.close()
            # Normally the queue is empty now; if this thread died of a bug, fail
            # what is left rather than leave callers waiting forever.
            with self._lock:
                self._closed = True
            _settle(self.ready, StoreError("the SQLite connection thread stopped"))
            leftovers: list[_Outcome] = []
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, _Stop):
                    leftovers.append((item.loop, item.future, None, None))
                else:
                    err = StoreError("the store was closed before this operation ran")
                    leftovers.append((item[1], item[2], None, err))
            if stop is not None:
                leftovers.append((stop.loop, stop.future, None, None))
            _deliver(leftovers)

    @staticmethod
    def _read(conn: sqlite3.Connection, batch: list[_Item]) -> None:
        outcomes: list[_Outcome] = []
        for fn, loop, fut in batch:
            try:
                outcomes.append((loop, fut, fn(conn), None))
            except Exception as exc:
                outcomes.append((loop, fut, None, wrap_error(exc)))
        _deliver(outcomes)

    def _begin(self, conn: sqlite3.Connection) -> None:
        """``BEGIN IMMEDIATE``, retrying while another process holds the write lock.

        SQLite's own busy handler backs off to 100 ms sleeps, so a busy process
        that re-takes the lock right after each commit starves the others; short
        jittered retries catch the gaps between its transactions. (The writer
        connection's busy_timeout is 0 for this reason.)
        """
        deadline = 0.0
        delay = 0.0002
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                    raise
                now = time.monotonic()
                deadline = deadline or now + self._busy_timeout
                if now >= deadline:
                    raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 1.5, 0.002)

    def _write(self, conn: sqlite3.Connection, batch: list[_Item]) -> None:
        outcomes: list[_Outcome] = []
        try:
            self._begin(conn)
            if len(batch) == 1:
                # The common case: no savepoint; a failure rolls back the transaction.
                fn, loop, fut = batch[0]
                try:
                    result = fn(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK")
                    _deliver([(loop, fut, None, wrap_error(exc))])
                    return
                outcomes.append((loop, fut, result, None))
            else:
                for fn, loop, fut in batch:
                    conn.execute("SAVEPOINT op")
                    try:
                        result = fn(conn)
                    except Exception as exc:
                        # Raises if SQLite already rolled the whole transaction back
                        # (disk full, I/O error): then the batch fails below.
                        conn.execute("ROLLBACK TO op")
                        conn.execute("RELEASE op")
                        outcomes.append((loop, fut, None, wrap_error(exc)))
                    else:
                        conn.execute("RELEASE op")
                        outcomes.append((loop, fut, result, None))
            conn.execute("COMMIT")
            self.commits += 1
        except sqlite3.Error as exc:
            # The transaction as a whole failed, so none of it is durable.
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            err = wrap_error(exc)
            _deliver((loop, fut, None, err) for _, loop, fut in batch)
            return
        _deliver(outcomes)


class Watcher:
    """Wakes ``wait_for_change`` callers when any connection commits to the file.

    ``PRAGMA data_version`` changes when another connection (in this process or
    another) has committed; it is polled only while someone is waiting.
    """

    def __init__(
        self,
        name: str,
        connect: Callable[[], sqlite3.Connection],
        waiters: ChangeWaiters,
        interval: float,
    ) -> None:
        self._connect = connect
        self._waiters = waiters
        self._interval = interval
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stopping.set()
        self._waiters.added.set()
        await asyncio.to_thread(self._thread.join)

    def _main(self) -> None:
        try:
            conn = self._connect()
        except Exception:
            return  # only a latency hint: waiters still time out, the writer still notifies
        try:
            last = conn.execute("PRAGMA data_version").fetchone()[0]
            checked = time.monotonic()
            while not self._stopping.is_set():
                if not self._waiters:
                    self._waiters.added.wait()
                    self._waiters.added.clear()
                    # A commit made while nobody waited is reported too (a spurious
                    # early return is allowed; a missed one only costs latency).
                    # Still poll at most once per interval: a claim loop re-adds
                    # itself right after every wake-up.
                    rest = checked + self._interval - time.monotonic()
                    if rest > 0:
                        self._stopping.wait(rest)
                else:
                    self._stopping.wait(self._interval)
                version = conn.execute("PRAGMA data_version").fetchone()[0]
                checked = time.monotonic()
                if version != last:
                    last = version
                    self._waiters.notify()
        except sqlite3.Error:
            pass
        finally:
            conn.close()
