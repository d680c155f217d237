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
from pathlib import Path
from typing import Any, TypeVar

from keel.errors import StoreError
from keel.store.sqlite._schema import corrupt_error, is_corruption

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]
_Outcome = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Any, BaseException | None]


class _Busy(Exception):
    """Another connection holds the write lock (an impatient ``BEGIN IMMEDIATE``)."""


class _Stop:
    __slots__ = ("future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
        self.loop = loop
        self.future = future


_Item = tuple[Op, asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


def wrap_error(exc: BaseException, path: Path | None = None) -> BaseException:
    """sqlite3 errors surface as :class:`StoreError` (a damaged ``path`` as
    :class:`~keel.errors.DatabaseCorruptError`); Keel's own errors pass through."""
    if isinstance(exc, sqlite3.Error):
        err = corrupt_error(path, exc) if is_corruption(exc) else StoreError(f"SQLite error: {exc}")
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
    """Futures of coroutines inside ``wait_for_change``/``wait_for_work``, woken from any thread.

    Two channels: ``wait_for_change`` callers (result pollers) are woken by
    every change; ``wait_for_work`` callers (claim loops) only by changes that
    can make a run claimable, so a run finishing does not send a claim loop
    to look for work that cannot be there.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[asyncio.Future[None], asyncio.AbstractEventLoop] = {}
        self._work_waiters: dict[asyncio.Future[None], asyncio.AbstractEventLoop] = {}
        self.added = threading.Event()  # lets the watcher sleep while nobody waits

    def add(
        self, loop: asyncio.AbstractEventLoop, fut: asyncio.Future[None], *, work: bool = False
    ) -> None:
        with self._lock:
            (self._work_waiters if work else self._waiters)[fut] = loop
        self.added.set()

    def discard(self, fut: asyncio.Future[None]) -> None:
        with self._lock:
            self._waiters.pop(fut, None)
            self._work_waiters.pop(fut, None)

    def __bool__(self) -> bool:
        return bool(self._waiters) or bool(self._work_waiters)

    def notify(self, *, work: bool = True) -> None:
        """Wake the change waiters, and the work waiters too if ``work``."""
        with self._lock:
            items = list(self._waiters.items())
            self._waiters.clear()
            if work:
                items += self._work_waiters.items()
                self._work_waiters.clear()
        if items:
            _deliver((loop, fut, None, None) for fut, loop in items)


class DbThread:
    """One connection on one thread, draining a queue of operations.

    As the writer it runs every operation queued at the moment in one
    ``BEGIN IMMEDIATE ... COMMIT`` (group commit), each inside a SAVEPOINT so a
    failing operation rolls back only itself; results are delivered after the
    COMMIT, so nobody sees a write that could still be rolled back.

    ``inline`` (the writer only): a write is not queued at once but at the end
    of the event-loop tick that issued it (``loop.call_soon``). If it is then
    the only write of that tick and the thread has nothing in hand, it runs
    right there on the event-loop thread, under the lock that guards the
    connection (opened with ``check_same_thread=False``): no hand-off to the
    thread and no hand-back, which cost about as much as the COMMIT itself
    when writes come one at a time (a sequential workflow's critical path).
    Several writes in one tick, or any while the thread is busy, go to the
    thread as before and share one COMMIT (group commit is kept under
    concurrency). The trade-off: an inline write blocks its event loop for one
    transaction (one fsync with ``synchronous=FULL``), which is acceptable
    because that loop had nothing else ready in the same tick, and the
    coroutine that issued it would have waited for that COMMIT anyway. The
    GIL is released inside SQLite calls, so step threads keep running. An
    inline write never waits for another process's write lock: if
    ``BEGIN IMMEDIATE`` finds it taken, the write goes to the thread, which
    retries.
    """

    def __init__(
        self,
        name: str,
        connect: Callable[[], sqlite3.Connection],
        *,
        writer: bool,
        inline: bool = False,
        max_batch: int = 256,
        busy_timeout: float = 10.0,
        path: Path | None = None,
    ) -> None:
        self._connect = connect
        self._path = path  # named in errors
        self._busy_timeout = busy_timeout
        self._writer = writer
        self._inline = inline and writer
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Item | _Stop] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        #: The connection, once made; used by the thread and by inline writes.
        self._conn: sqlite3.Connection | None = None
        #: Held by whoever uses the connection: the thread, or an inline write.
        self._conn_lock = threading.Lock()
        #: Operations handed to the thread and not yet delivered (under _lock).
        self._outstanding = 0
        #: Inline mode: writes of the current loop tick, per loop (under _lock).
        self._pending: dict[asyncio.AbstractEventLoop, list[_Item]] = {}
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
            if self._inline:
                pending = self._pending.get(loop)
                if pending is None:
                    self._pending[loop] = [(fn, loop, fut)]
                    loop.call_soon(self._end_of_tick, loop)
                else:
                    pending.append((fn, loop, fut))
            else:
                self._outstanding += 1
                self._queue.put((fn, loop, fut))
        return await fut

    def data_version(self) -> int | None:
        """``PRAGMA data_version`` of the connection (``None`` once it is closed).

        It changes only when another connection commits to the file.
        """
        with self._conn_lock:
            conn = self._conn
            if conn is None:
                return None
            value: int = conn.execute("PRAGMA data_version").fetchone()[0]
            return value

    def _end_of_tick(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run this tick's only write inline if the thread is idle; else queue them."""
        conn: sqlite3.Connection | None = None
        with self._lock:
            batch = self._pending.pop(loop, None)
            if not batch:  # stop() queued them already
                return
            if len(batch) == 1 and self._outstanding == 0 and self._conn_lock.acquire(False):
                conn = self._conn  # stable while we hold _conn_lock
                if conn is None:  # not connected yet, or closed: the thread answers
                    self._conn_lock.release()
            if conn is None:
                self._hand_over(batch)
                return
        try:
            outcomes = self._write(conn, batch, patient=False)
        except _Busy:
            # Another process is writing: never wait for it on the event loop.
            self._conn_lock.release()
            with self._lock:
                self._hand_over(batch)
            return
        except BaseException as exc:  # e.g. KeyboardInterrupt inside an operation
            try:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
            finally:
                self._conn_lock.release()
            err = StoreError(f"write interrupted: {exc!r}")
            _resolve_all([(fut, None, err) for _, _, fut in batch])
            raise
        self._conn_lock.release()
        _resolve_all([(fut, result, exc) for _, fut, result, exc in outcomes])

    def _hand_over(self, batch: list[_Item]) -> None:
        """Queue ``batch`` for the thread (call with ``_lock`` held)."""
        if self._closed:  # the thread is gone or going: it would never answer
            err = StoreError("the store was closed before this operation ran")
            _resolve_all([(fut, None, err) for _, _, fut in batch])
            return
        self._outstanding += len(batch)
        for item in batch:
            self._queue.put(item)

    async def stop(self) -> None:
        """Finish queued operations, close the connection and end the thread."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._closed:  # already stopped, or the thread has ended
                return
            self._closed = True
            for items in self._pending.values():  # accepted writes still run
                self._outstanding += len(items)
                for item in items:
                    self._queue.put(item)
            self._pending.clear()
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
                failure = wrap_error(exc, self._path)
            self._conn = conn
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
                outcomes: list[_Outcome]
                if conn is None:
                    assert failure is not None
                    outcomes = [(loop, fut, None, failure) for _, loop, fut in batch]
                elif self._writer:
                    with self._conn_lock:
                        outcomes = self._write(conn, batch)
                else:
                    outcomes = self._read(conn, batch)
                with self._lock:  # done before the callers hear: their next write may go inline
                    self._outstanding -= len(batch)
                _deliver(outcomes)
        finally:
            if conn is not None:
                with self._conn_lock:
                    self._conn = None
                    conn.close()
            # Normally the queue is empty now; if this thread died of a bug, fail
            # what is left rather than leave callers waiting forever.
            leftovers: list[_Outcome] = []
            with self._lock:
                self._closed = True
                err = StoreError("the store was closed before this operation ran")
                for items in self._pending.values():
                    leftovers.extend((loop, fut, None, err) for _, loop, fut in items)
                self._pending.clear()
            _settle(self.ready, StoreError("the SQLite connection thread stopped"))
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

    def _read(self, conn: sqlite3.Connection, batch: list[_Item]) -> list[_Outcome]:
        outcomes: list[_Outcome] = []
        for fn, loop, fut in batch:
            try:
                outcomes.append((loop, fut, fn(conn), None))
            except Exception as exc:
                outcomes.append((loop, fut, None, wrap_error(exc, self._path)))
        return outcomes

    def _begin(self, conn: sqlite3.Connection, *, patient: bool = True) -> None:
        """``BEGIN IMMEDIATE``, retrying while another process holds the write lock.

        SQLite's own busy handler backs off to 100 ms sleeps, so a busy process
        that re-takes the lock right after each commit starves the others; short
        jittered retries catch the gaps between its transactions. (The writer
        connection's busy_timeout is 0 for this reason.)

        ``patient=False`` (inline writes, on the event loop) tries once and
        raises :class:`_Busy` rather than wait for another process.
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
                if not patient:
                    raise _Busy from None
                now = time.monotonic()
                deadline = deadline or now + self._busy_timeout
                if now >= deadline:
                    raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 1.5, 0.002)

    def _write(
        self, conn: sqlite3.Connection, batch: list[_Item], *, patient: bool = True
    ) -> list[_Outcome]:
        """One transaction over ``batch``; the outcomes to deliver once it is over.

        ``patient=False``: raise :class:`_Busy`, having done nothing, if another
        process holds the write lock.
        """
        outcomes: list[_Outcome] = []
        try:
            self._begin(conn, patient=patient)
            if len(batch) == 1:
                # The common case: no savepoint; a failure rolls back the transaction.
                fn, loop, fut = batch[0]
                try:
                    result = fn(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK")
                    return [(loop, fut, None, wrap_error(exc, self._path))]
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
                        outcomes.append((loop, fut, None, wrap_error(exc, self._path)))
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
            err = wrap_error(exc, self._path)
            return [(loop, fut, None, err) for _, loop, fut in batch]
        return outcomes


class Watcher:
    """Wakes ``wait_for_change`` callers when another connection commits to the file.

    Polls ``PRAGMA data_version`` of the store's writer connection (through
    ``version``), only while someone is waiting. On that connection the value
    changes only when *another* connection (another process, or another store
    on the same file) has committed, not with this store's own commits, whose
    waiters the store wakes itself: so a worker's own steady stream of writes
    does not send its claim loop to look for work every poll interval.
    """

    def __init__(
        self,
        name: str,
        version: Callable[[], int | None],
        waiters: ChangeWaiters,
        interval: float,
    ) -> None:
        self._version = version
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
            last = self._version()
            checked = time.monotonic()
            while not self._stopping.is_set() and last is not None:
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
                version = self._version()
                checked = time.monotonic()
                if version != last:
                    last = version
                    self._waiters.notify()
        except sqlite3.Error:
            pass  # only a latency hint: waiters still time out, the writer still notifies
