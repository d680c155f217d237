"""Group commit: how :class:`~keel.store.postgres.PostgresStore` sends its run writes.

A write that arrives alone runs at once on a connection of its own, sparing
the pool checkout. Writes that arrive while another batch of them is in
flight queue up and go out together as the next batch: one pipeline on one
pooled connection, one round trip, one transaction, one WAL flush.

Large values are never pipelined. psycopg's pipeline sends its last bytes
with one non-blocking flush and then only waits to read: when the statements
outgrow what the socket buffers take at once, the rest stays in libpq's
buffer while the server waits in ``ClientRead`` for it, each side waiting for
the other, holding the row locks of the statements already run (psycopg
issue #685). A batch is therefore capped at :data:`PIPELINE_BYTES` of
parameters, a larger write goes out alone as a plain statement (whose send
loops until every byte is out), and a batch that still does not complete
within the statement timeout is abandoned: its connection is dropped, the
server rolls its transaction back.
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool

from keel.errors import StoreError
from keel.store.postgres import _conn, _sql

Q = _sql.queries()
_FLUSHERS = 1  # group-commit batches in flight at once
_MAX_BATCH = 64  # statements per batch
#: Parameter bytes one pipeline may carry: far below what the kernel's socket
#: buffers accept in one go (on Linux at least the 128 KiB default receive
#: buffer), so the pipeline's single final flush always sends everything.
PIPELINE_BYTES = 64 * 1024
#: How much longer than the server's statement timeout a batch may take before
#: it is abandoned on the client side (the server's own timeout fires first
#: when the statement is running; this catches a batch stuck mid-send).
_CLIENT_GRACE = 2.0
_Conn = psycopg.AsyncConnection[Any]
_Row = tuple[Any, ...]
_Queued = tuple[str, dict[str, Any], asyncio.Future[list[_Row]]]


class GroupCommitMixin:
    """The write path of :class:`~keel.store.postgres.PostgresStore` (see :meth:`_write`)."""

    # Set up by PostgresStore.__init__ (and open/close).
    _pool: AsyncConnectionPool[_Conn] | None
    _queue: list[_Queued]  # writes waiting for the next batch
    _flushers: set[asyncio.Task[None]]  # batches in flight
    _inline: bool  # a lone write runs in its caller's task...
    _solo: _Conn | None  # ...on this connection (see _solo_write)
    statement_timeout: float  # seconds (see PostgresStore)

    if TYPE_CHECKING:  # provided by PostgresStore

        async def _connect(self) -> _Conn: ...

        def _connection(self) -> AbstractAsyncContextManager[_Conn]: ...

        def _errors(self) -> AbstractContextManager[None]: ...

        async def _fetch(self, query: str, params: dict[str, Any]) -> list[_Row]: ...

    async def _write(self, query: str, params: dict[str, Any]) -> list[_Row]:
        """Run a single-statement write, group-committed with concurrent ones.

        Writes that arrive while a batch is in flight queue up and go out as the
        next batch: one pipeline on one pooled connection, one round trip, and
        (the statements between two pipeline syncs form one implicit
        transaction) one commit. Callers get their rows only after that commit,
        so commit-before-wake and durability hold as for a lone statement. A
        batch whose transaction failed wrote nothing at all; its statements are
        then run again one by one, so one bad write fails only its caller.
        """
        if self._pool is None:
            raise StoreError(f"{self!r} is not open")
        if not (self._inline or self._flushers):
            # Alone (the sequential case): run it here, saving the hand-off to a
            # flusher task. Writes arriving meanwhile queue for a flusher.
            self._inline = True
            try:
                return await self._solo_write(query, params)
            finally:
                self._inline = False
        fut: asyncio.Future[list[_Row]] = asyncio.get_running_loop().create_future()
        self._queue.append((query, params, fut))
        if len(self._flushers) < _FLUSHERS:
            task = asyncio.get_running_loop().create_task(self._flush())
            self._flushers.add(task)
        return await fut

    async def _solo_write(self, query: str, params: dict[str, Any]) -> list[_Row]:
        """Run a lone write on the store's own connection for them, sparing the pool
        checkout. Only one runs at a time (``_inline``); batches use the pool.
        As for a pooled connection, a dead one is spotted (and replaced) before
        use, and one left unfit (cancelled mid-query, broken) is closed after it;
        the next lone write then opens another."""
        conn = self._solo
        if conn is not None and _conn.is_dead(conn):  # killed while idle
            self._solo = None
            await conn.close()
            conn = None
        if conn is None:
            conn = await self._connect()
            if self._pool is None:  # closed meanwhile
                await conn.close()
                raise StoreError(f"{self!r} is not open")
            self._solo = conn
        idle = False
        try:
            try:
                with self._errors():
                    cur = await conn.execute(Q[query], params, binary=True)
                    rows = await cur.fetchall()
            except Exception:  # a failed statement (autocommit) leaves a healthy one idle
                idle = _idle(conn)
                raise
            idle = _idle(conn)
            return rows
        finally:
            # Cancelled (perhaps mid-query), broken or in a transaction: as the pool
            # would, close it rather than reuse it.
            if not idle:
                if self._solo is conn:
                    self._solo = None
                await conn.close()

    async def _flush(self) -> None:
        try:
            await self._flush_queue()
        finally:
            # Not in a done-callback: that runs a loop turn late, and a write
            # queued meanwhile would wait for a flusher that has already ended.
            task = asyncio.current_task()
            assert task is not None
            self._flushers.discard(task)

    async def _flush_queue(self) -> None:
        while self._queue:
            batch = _take_batch(self._queue)
            del self._queue[: len(batch)]
            results: list[list[_Row] | BaseException]
            try:
                async with asyncio.timeout(self.statement_timeout + _CLIENT_GRACE):
                    if len(batch) == 1:
                        results = [await self._fetch(batch[0][0], batch[0][1])]
                    else:
                        results = await self._pipeline(batch)
            except TimeoutError:
                # Abandoned: psycopg asks the server to cancel it, and a connection
                # left mid-statement is closed by the pool, not reused; either way
                # the server rolls the batch back and its row locks are released.
                stuck = StoreError(
                    f"{self!r}: a write did not complete within {self.statement_timeout:g} s"
                )
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_exception(stuck)
                continue
            except BaseException as exc:
                err = exc if isinstance(exc, Exception) else StoreError(f"{self!r}: {exc!r}")
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_exception(err)
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, _, fut), result in zip(batch, results, strict=True):
                if fut.done():
                    continue
                if isinstance(result, BaseException):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)

    async def _pipeline(self, batch: list[_Queued]) -> list[list[_Row] | BaseException]:
        async with self._connection() as conn:
            try:
                async with conn.pipeline() as pipe:
                    cursors = [
                        await conn.execute(Q[query], params, binary=True)
                        for query, params, _ in batch
                    ]
                    await pipe.sync()
                    return [await cur.fetchall() for cur in cursors]
            except psycopg.Error:
                if conn.broken or conn.closed:
                    raise  # whether the batch committed is unknown: like a lone statement
                # Otherwise its transaction was rolled back: nothing was written.
        results: list[list[_Row] | BaseException] = []
        for query, params, _ in batch:
            try:
                results.append(await self._fetch(query, params))
            except Exception as exc:
                results.append(exc)
        return results

    async def _transaction(self, statements: list[tuple[str, dict[str, Any]]]) -> list[list[_Row]]:
        """Run ``statements`` in one pipeline: one round trip, one implicit transaction
        (if any fails, none of them is committed). Past :data:`PIPELINE_BYTES` of
        parameters, in an explicit transaction instead (see the module docstring)."""
        if sum(_param_bytes(params) for _, params in statements) > PIPELINE_BYTES:
            async with self._connection() as conn, conn.transaction():
                results = []
                for q, params in statements:
                    cur = await conn.execute(Q[q], params, binary=True)
                    results.append(await cur.fetchall())
                return results
        async with self._connection() as conn, conn.pipeline() as pipe:
            cursors = [await conn.execute(Q[q], params, binary=True) for q, params in statements]
            await pipe.sync()
            return [await cur.fetchall() for cur in cursors]


def _param_bytes(params: dict[str, Any]) -> int:
    """About how many bytes ``params`` take on the wire (their strings and bytes)."""
    total = 0
    for value in params.values():
        for item in value if isinstance(value, list | tuple) else (value,):
            if isinstance(item, bytes | bytearray | memoryview | str):
                total += len(item)
    return total


def _take_batch(queue: list[_Queued]) -> list[_Queued]:
    """The next batch from the head of ``queue``: at most ``_MAX_BATCH`` writes and
    :data:`PIPELINE_BYTES` of parameters, except that a larger write goes alone."""
    total = 0
    for n, (_, params, _) in enumerate(queue[:_MAX_BATCH]):
        total += _param_bytes(params)
        if total > PIPELINE_BYTES:
            return queue[: max(n, 1)]
    return queue[:_MAX_BATCH]


def _idle(conn: _Conn) -> bool:
    """Whether ``conn`` is fit for another statement (what the pool checks on return)."""
    return not conn.broken and conn.pgconn.transaction_status == TransactionStatus.IDLE
