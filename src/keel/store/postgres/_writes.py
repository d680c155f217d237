"""Group commit: how a PostgreSQL store sends its run writes.

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
from typing import Any, NamedTuple

import psycopg
from psycopg.pq import TransactionStatus

from keel.errors import StoreError
from keel.store.postgres._conn import is_dead
from keel.store.postgres._pool import Conn, Pool, run
from keel.store.postgres._sql import Row

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


class Statement(NamedTuple):
    """One statement to run: its SQL, parameters and row factory."""

    sql: str
    params: dict[str, Any]
    row: Row


class _Queued(NamedTuple):
    """A write waiting for a batch: its statement's fields, and its caller's future."""

    sql: str
    params: dict[str, Any]
    row: Row
    done: asyncio.Future[list[Any]]

    @property
    def statement(self) -> Statement:
        return Statement(self.sql, self.params, self.row)


class GroupCommit:
    """The write path of a PostgreSQL store (see :meth:`write`)."""

    def __init__(self, pool: Pool, statement_timeout: float) -> None:
        self._pool = pool
        self._timeout = statement_timeout
        self._queue: list[_Queued] = []  # writes waiting for the next batch
        self._flushers: set[asyncio.Task[None]] = set()  # batches in flight
        self._inline = False  # a lone write runs in its caller's task...
        self._solo: Conn | None = None  # ...on this connection (see _solo_write)

    async def write(self, statement: Statement) -> list[Any]:
        """Run a single-statement write, group-committed with concurrent ones.

        Writes that arrive while a batch is in flight queue up and go out as the
        next batch: one pipeline on one pooled connection, one round trip, and
        (the statements between two pipeline syncs form one implicit
        transaction) one commit. Callers get their rows only after that commit,
        so commit-before-wake and durability hold as for a lone statement. A
        batch whose transaction failed wrote nothing at all; its statements are
        then run again one by one, so one bad write fails only its caller.
        """
        self._pool.check_open()
        if not (self._inline or self._flushers):
            # Alone (the sequential case): run it here, saving the hand-off to a
            # flusher task. Writes arriving meanwhile queue for a flusher.
            self._inline = True
            try:
                return await self._solo_write(statement)
            finally:
                self._inline = False
        done: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Queued(*statement, done))
        if len(self._flushers) < _FLUSHERS:
            task = asyncio.get_running_loop().create_task(self._flush())
            self._flushers.add(task)
        return await done

    async def transaction(self, statements: list[Statement]) -> list[list[Any]]:
        """Run ``statements`` in one pipeline: one round trip, one implicit transaction
        (if any fails, none of them is committed). Past :data:`PIPELINE_BYTES` of
        parameters, in an explicit transaction instead (see the module docstring)."""
        if sum(_param_bytes(s.params) for s in statements) > PIPELINE_BYTES:
            async with self._pool.connection() as conn, conn.transaction():
                return [await run(conn, *s) for s in statements]
        async with self._pool.connection() as conn:
            return await _pipelined(conn, statements)

    async def close(self) -> None:
        """Let the batches in flight finish (their callers await them), then drop
        the lone writes' connection."""
        if self._flushers:
            await asyncio.gather(*self._flushers, return_exceptions=True)
        solo, self._solo = self._solo, None
        if solo is not None:
            await solo.close()

    async def _solo_write(self, statement: Statement) -> list[Any]:
        """Run a lone write on the store's own connection for them, sparing the pool
        checkout. Only one runs at a time (``_inline``); batches use the pool.
        As for a pooled connection, a dead one is spotted (and replaced) before
        use, and one left unfit (cancelled mid-query, broken) is closed after it;
        the next lone write then opens another."""
        conn = self._solo
        if conn is not None and is_dead(conn):  # killed while idle
            self._solo = None
            await conn.close()
            conn = None
        if conn is None:
            conn = await self._pool.connect()
            if not self._pool.is_open:  # closed meanwhile
                await conn.close()
                self._pool.check_open()
            self._solo = conn
        idle = False
        try:
            try:
                with self._pool.errors():
                    rows = await run(conn, *statement)
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
            results: list[list[Any] | BaseException]
            try:
                async with asyncio.timeout(self._timeout + _CLIENT_GRACE):
                    if len(batch) == 1:
                        results = [await self._pool.fetch(*batch[0].statement)]
                    else:
                        results = await self._pipeline(batch)
            except TimeoutError:
                # Abandoned: psycopg asks the server to cancel it, and a connection
                # left mid-statement is closed by the pool, not reused; either way
                # the server rolls the batch back and its row locks are released.
                results = [
                    StoreError(
                        f"{self._pool.target}: a write did not complete within {self._timeout:g} s"
                    )
                ] * len(batch)
            except BaseException as exc:
                err = exc if isinstance(exc, Exception) else StoreError(f"{exc!r}")
                _settle(batch, [err] * len(batch))
                if not isinstance(exc, Exception):
                    raise
                continue
            _settle(batch, results)

    async def _pipeline(self, batch: list[_Queued]) -> list[list[Any] | BaseException]:
        async with self._pool.connection() as conn:
            try:
                return list(await _pipelined(conn, [q.statement for q in batch]))
            except psycopg.Error:
                if conn.broken or conn.closed:
                    raise  # whether the batch committed is unknown: like a lone statement
                # Otherwise its transaction was rolled back: nothing was written.
        results: list[list[Any] | BaseException] = []
        for queued in batch:
            try:
                results.append(await self._pool.fetch(*queued.statement))
            except Exception as exc:
                results.append(exc)
        return results


async def _pipelined(conn: Conn, statements: list[Statement]) -> list[list[Any]]:
    async with conn.pipeline() as pipe:
        cursors = []
        for sql, params, row in statements:
            cur = conn.cursor(row_factory=row, binary=True)
            cursors.append(await cur.execute(sql, params))
        await pipe.sync()
        return [await cur.fetchall() for cur in cursors]


def _settle(batch: list[_Queued], results: list[list[Any] | BaseException]) -> None:
    for queued, result in zip(batch, results, strict=True):
        if queued.done.done():
            continue
        if isinstance(result, BaseException):
            queued.done.set_exception(result)
        else:
            queued.done.set_result(result)


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
    for n, (_, params, *_) in enumerate(queue[:_MAX_BATCH]):
        total += _param_bytes(params)
        if total > PIPELINE_BYTES:
            return queue[: max(n, 1)]
    return queue[:_MAX_BATCH]


def _idle(conn: Conn) -> bool:
    """Whether ``conn`` is fit for another statement (what the pool checks on return)."""
    return not conn.broken and conn.pgconn.transaction_status == TransactionStatus.IDLE
