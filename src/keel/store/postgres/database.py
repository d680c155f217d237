"""One PostgreSQL database seen from a store: what every capability runs its SQL through.

Every operation is one statement on a pooled connection in autocommit mode:
one round trip, one transaction (a lone write uses a connection of its own,
sparing the pool checkout). Run writes that arrive while another batch of
them is in flight are group-committed (see :mod:`keel.store.postgres._writes`).
Wake-ups come by LISTEN/NOTIFY on one more connection. All time comparisons
use the database clock; :attr:`PgDatabase.clock` estimates it without a round
trip, from the clock readings that claims and renewals bring back anyway.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from psycopg.rows import tuple_row

from keel.store.postgres._conn import ClockOffset
from keel.store.postgres._listener import ChangeWaiters, Listener
from keel.store.postgres._pool import Conn, Pool
from keel.store.postgres._schema import migrate, prepare, schema_version
from keel.store.postgres._sql import Q, Row
from keel.store.postgres._writes import GroupCommit, Statement


class PgDatabase:
    """The pool, the group-commit writer, the listener and the clock of one store.

    See :class:`~keel.store.postgres.store.PostgresStore` for the settings. It
    belongs to the event loop that opened it.
    """

    def __init__(
        self,
        pool: Pool,
        *,
        schema: str,
        statement_timeout: float,
        sizes: tuple[int, int],
        timeouts: tuple[float, float],
    ) -> None:
        self.pool = pool
        self.schema = schema
        self.channel = f"{schema}.changes"  # NOTIFY channel of every Keel write worth waking for
        self.statement_timeout = statement_timeout
        self._sizes = sizes  # of the pool: min and max
        self._timeouts = timeouts  # to connect, and to wait for a free connection
        self.writes = GroupCommit(self.pool, self.statement_timeout)
        self.clock = ClockOffset()
        self.waiters = ChangeWaiters()  # changes.wait: woken by every notification
        self.work_waiters = ChangeWaiters()  # changes.wait_for_work: not by runs finishing
        self.schedule_waiters = ChangeWaiters()  # changes.wait_for_schedules
        self.listener: Listener | None = None
        self._opening: asyncio.Task[None] | None = None

    @property
    def target(self) -> str:
        """Where it connects (host:port/database), without secrets."""
        return self.pool.target

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self, *, auto_migrate: bool) -> None:
        """Connect, check (and migrate) the schema, start the pool and the listener. Idempotent."""
        if self._opening is None:
            self._opening = asyncio.get_running_loop().create_task(self._open(auto_migrate))
        opening = self._opening
        try:
            # Shielded: one caller giving up must not cancel the others' open.
            await asyncio.shield(opening)
        except BaseException:
            if opening.done() and self._opening is opening:
                self._opening = None  # a later open() tries again
            raise

    async def _open(self, auto_migrate: bool) -> None:
        conn = await self.pool.connect(admin=True)
        listener = Listener(
            self.pool.connect,
            self.channel,
            self.waiters,
            self.work_waiters,
            self.schedule_waiters,
        )
        try:
            with self.pool.errors():
                await prepare(conn, self.schema, self.target, auto_migrate=auto_migrate)
                for _ in range(3):
                    await self._sample_clock(conn)
                await listener.start(conn)  # the listener owns conn from here on
        except BaseException:
            await conn.close()
            raise
        min_size, max_size = self._sizes
        try:
            await self.pool.open(
                f"keel-{self.schema}", min_size=min_size, max_size=max_size, timeouts=self._timeouts
            )
        except BaseException:
            await listener.stop()
            raise
        self.listener = listener

    async def close(self) -> None:
        """Stop the listener and close every connection. Idempotent."""
        opening, self._opening = self._opening, None
        if opening is not None and not opening.done():
            opening.cancel()
        if opening is not None:
            await asyncio.gather(opening, return_exceptions=True)
        await self.writes.close()
        listener, self.listener = self.listener, None
        # Nobody should sit out a timeout on a closed store.
        for waiters in (self.waiters, self.work_waiters, self.schedule_waiters):
            waiters.wake_all()
        if listener is not None:
            await listener.stop()
        await self.pool.close()

    async def _sample_clock(self, conn: Conn) -> None:
        sent = time.time()
        cur = await conn.execute(Q["now"], prepare=False)
        row = await cur.fetchone()
        assert row is not None
        self.clock.observe(row[0], sent, time.time())

    # -- statements --------------------------------------------------------------------

    async def fetch(
        self, sql: str, params: dict[str, Any], row: Row = tuple_row, *, prepare: bool = True
    ) -> list[Any]:
        """A read (or a write that needs no group commit) on a pooled connection.

        ``prepare=False`` for reads whose best plan depends on the values (a
        rare state or a wide one, a time range or none): a prepared statement
        switches to a generic plan after five runs, which for a filtered page of
        runs can read every run of a workflow and sort them (0.7 s on a million).
        """
        return await self.pool.fetch(sql, params, row, prepare=prepare)

    async def fetch_clocked(self, sql: str, params: dict[str, Any], row: Row) -> list[Any]:
        """:meth:`fetch` of a statement whose rows (at least one) carry the database
        clock as column ``now``, which refreshes :attr:`clock` on the way."""
        sent = time.time()
        rows = await self.pool.fetch(sql, params, row)
        self.clock.observe(rows[0]["now"], sent, time.time())
        return rows

    async def write(self, sql: str, params: dict[str, Any], row: Row = tuple_row) -> list[Any]:
        """A write, group-committed with concurrent ones."""
        return await self.writes.write(Statement(sql, params, row))

    async def transaction(self, *statements: Statement, clocked: bool = False) -> list[list[Any]]:
        """Several statements in one round trip and one transaction; ``clocked``: the
        last one's rows carry the clock, as for :meth:`fetch_clocked`."""
        sent = time.time()
        results = await self.writes.transaction(list(statements))
        if clocked:
            self.clock.observe(results[-1][0]["now"], sent, time.time())
        return results

    # -- schema ------------------------------------------------------------------------

    async def migrate(self) -> list[int]:
        """Apply pending migrations (the database need not be open)."""
        conn = await self.pool.connect(admin=True)
        try:
            with self.pool.errors():
                return await migrate(conn, self.schema, self.target)
        finally:
            await conn.close()

    async def schema_version(self) -> int:
        """The database's Keel schema version (0: none yet)."""
        conn = await self.pool.connect()
        try:
            with self.pool.errors():
                return await schema_version(conn, self.schema, self.target)
        finally:
            await conn.close()
