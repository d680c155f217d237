"""The SQLite store's connections: the one object every capability of the store holds.

One writer thread owns the write connection and commits every write queued
at that moment in one ``BEGIN IMMEDIATE`` transaction (group commit); a reader
thread serves reads from a WAL snapshot; a watcher thread notices commits by
other processes. Operations are functions of a ``sqlite3.Connection`` whose
rows are ``sqlite3.Row`` (read by column name).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import keel.store.sqlite._schema as _schema  # looked up at call time: benchmarks wrap it
from keel.errors import StoreError
from keel.store.sqlite._rows import Reader
from keel.store.sqlite._threads import ChangeWaiters, DbThread, Watcher

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T")
R = TypeVar("R", bound="DataclassInstance")
Params = dict[str, Any] | tuple[Any, ...]


class Database:
    """The connection threads of one SQLite file, the store clock and the change waiters."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str,
        busy_timeout: float,
        poll_interval: float,
        clock: Callable[[], float],
        name: str,
    ) -> None:
        self.path = path
        self.synchronous = synchronous
        #: The store clock: one machine shares it with every process using the file.
        self.clock = clock
        self._name = name  # the store's repr, for errors
        self._busy_timeout = busy_timeout
        self._poll_interval = poll_interval
        self.writer: DbThread | None = None
        self._reader: DbThread | None = None
        self._watcher: Watcher | None = None
        self.waiters = ChangeWaiters()

    async def open(self) -> None:
        """Check the file, migrate it and start the connection threads. Idempotent."""
        if self.writer is not None:
            await asyncio.shield(asyncio.wrap_future(self.writer.ready))
            return
        path, timeout = self.path, self._busy_timeout
        writer = DbThread(
            "keel-sqlite-writer",
            lambda: _schema.prepare_writer(path, timeout, self.synchronous),
            writer=True,
            inline=True,
            busy_timeout=timeout,
            path=path,
        )
        self.writer = writer
        try:
            # Shielded: cancelling open() must not cancel the thread's own future.
            await asyncio.shield(asyncio.wrap_future(writer.ready))
        except BaseException:
            self.writer = None
            await writer.stop()
            raise
        self._reader = DbThread(
            "keel-sqlite-reader",
            lambda: _schema.prepare_reader(path, timeout),
            writer=False,
            path=path,
        )
        self._watcher = Watcher(
            "keel-sqlite-watcher", writer.data_version, self.waiters, self._poll_interval
        )

    async def close(self) -> None:
        """Finish queued writes, close every connection and stop the threads. Idempotent."""
        writer, reader, watcher = self.writer, self._reader, self._watcher
        self.writer = self._reader = self._watcher = None
        self.waiters.notify()  # nobody should sit out a timeout on a closed store
        if watcher is not None:
            await watcher.stop()
        if reader is not None:
            await reader.stop()
        if writer is not None:
            await writer.stop()

    def check_open(self) -> None:
        if self.writer is None:
            raise StoreError(f"{self._name} is not open")

    async def write(
        self,
        op: Callable[[sqlite3.Connection], T],
        *,
        notify: bool = False,
        work: bool = True,
    ) -> T:
        """Run ``op`` in the writer's next group transaction; resolved after COMMIT.

        ``notify`` wakes this process's change waiters: only for writes that can
        make a run claimable or finished. A worker's own journal appends do not,
        so they do not wake its claim loop for nothing. ``work=False``: the
        write cannot make a run claimable (a run finished), so work waiters
        (claim loops) sleep on.
        """
        if self.writer is None:
            raise StoreError(f"{self._name} is not open")
        result = await self.writer.call(op)
        if notify:
            self.waiters.notify(work=work)
        return result

    async def read(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``op`` on the reader connection (a WAL snapshot of the last commit)."""
        if self._reader is None:
            raise StoreError(f"{self._name} is not open")
        return await self._reader.call(op)

    async def read_one(self, query: str, params: Params, reader: Reader[R]) -> R | None:
        """The record of the first row of ``query``, or ``None`` if it has none."""
        return await self.read(lambda conn: reader.one(conn.execute(query, params)))

    async def read_all(self, query: str, params: Params, reader: Reader[R]) -> list[R]:
        """The records of every row of ``query``, in order."""
        return await self.read(lambda conn: reader.all(conn.execute(query, params)))

    async def wait(self, timeout: float, *, work: bool) -> None:
        """Return after a change this process made or (polled) another one did, or
        on ``timeout``; ``work``: only changes that can make a run claimable."""
        if timeout <= 0:
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self.waiters.add(loop, fut, work=work)
        try:
            await asyncio.wait([fut], timeout=timeout)
        finally:
            self.waiters.discard(fut)


class Capability:
    """One capability of the SQLite store (runs, mailbox, ...): it works on the
    store's :class:`Database`, shared with the others."""

    def __init__(self, db: Database) -> None:
        self._db = db
