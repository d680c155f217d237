"""The connections of a PostgreSQL store: the psycopg pool, and connections of their own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool

from keel.errors import StoreError
from keel.store.postgres._conn import ErrorMapper, is_dead
from keel.store.postgres._sql import Row

Conn = psycopg.AsyncConnection[Any]


class Pool:
    """A pool of connections to one schema, opened and closed with its store.

    Every connection prepares its statements on first use, works in autocommit
    mode in Keel's schema and (but for ``admin`` ones) under the statement
    timeout. An idle pooled connection the server has closed is spotted and
    replaced before use, without a round trip.
    """

    def __init__(
        self, url: str, target: str, kwargs: dict[str, Any], admin_kwargs: dict[str, Any]
    ) -> None:
        self.url = url
        self.target = target  # where it connects, without secrets
        self.kwargs = kwargs
        self._admin_kwargs = admin_kwargs
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._size = 1

    @property
    def is_open(self) -> bool:
        return self._pool is not None

    def check_open(self) -> None:
        if self._pool is None:
            raise StoreError(f"the store of {self.target} is not open")

    def errors(self) -> ErrorMapper:
        """A ``with`` block turning psycopg errors into :class:`StoreError`."""
        return ErrorMapper(self.target)

    async def open(
        self, name: str, *, min_size: int, max_size: int, timeouts: tuple[float, float]
    ) -> None:
        """Open the pool; ``timeouts``: to connect, and to wait for a free connection."""
        connect_timeout, pool_timeout = timeouts
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self.url,
            kwargs=self.kwargs,
            min_size=min_size,
            max_size=max_size,
            open=False,
            timeout=pool_timeout,
            name=name,
            # No check callback: a per-checkout ping would double the round trips
            # of every step. connection() spots dead connections locally instead.
        )
        try:
            with self.errors():
                await pool.open(wait=True, timeout=connect_timeout + pool_timeout)
        except BaseException:
            await pool.close()
            raise
        self._pool, self._size = pool, max_size

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def connect(self, *, admin: bool = False, **extra: Any) -> Conn:
        """A new connection outside the pool (schema work, the listener, lone writes);
        ``admin``: without the statement timeout, for migrations."""
        kwargs = (self._admin_kwargs if admin else self.kwargs) | extra
        with self.errors():
            return await psycopg.AsyncConnection.connect(self.url, **kwargs)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        """A pooled connection; errors inside the block become :class:`StoreError`."""
        self.check_open()
        pool = self._pool
        assert pool is not None
        with self.errors():
            for _ in range(self._size + 1):
                conn = await pool.getconn()
                if not is_dead(conn):
                    break
                # Killed while idle (server restart): closed, the pool replaces it.
                await conn.close()
                await pool.putconn(conn)
            else:
                raise StoreError(f"every pooled connection to {self.target} is broken")
            try:
                yield conn
            finally:
                await pool.putconn(conn)

    async def fetch(
        self, sql: str, params: dict[str, Any], row: Row = tuple_row, *, prepare: bool = True
    ) -> list[Any]:
        """One statement on a pooled connection: its rows, made by ``row``."""
        async with self.connection() as conn:
            return await run(conn, sql, params, row, prepare=prepare)


async def run(
    conn: Conn, sql: str, params: dict[str, Any], row: Row, *, prepare: bool = True
) -> list[Any]:
    """Execute ``sql`` on ``conn`` (binary results) and fetch its rows, made by ``row``.

    ``prepare=False``: planned for these parameters each time (see PgDatabase.fetch).
    """
    cur = conn.cursor(row_factory=row, binary=True)
    await cur.execute(sql, params, prepare=None if prepare else False)
    return await cur.fetchall()
