"""Worker liveness on PostgreSQL: a session-level advisory lock per worker.

Each worker takes ``pg_advisory_lock(LIVENESS_CLASS, key)`` on a connection of
its own, kept open for its whole life, then registers ``(owner, key)`` in
``worker_locks``. The server drops the lock the moment that session ends: at
once when the process dies (the kernel closes its socket), and when the host
or the network dies, once the server's TCP keepalives give up on the socket
(set tighter than the defaults on this connection, :data:`SERVER_KEEPALIVES`);
the lease TTL still bounds whatever those miss. ``expire_dead_owners`` (see
queries.sql) finds registered owners whose lock no session holds and expires
their leases in one statement.

A worker whose liveness session is lost while it lives (a network blip, a
terminated backend) sees :attr:`PgLivenessLock.held` turn false, stops
claiming, and takes the lock again on a new connection; meanwhile other
workers may expire its leases, after which its writes fail the fence as after
any lease loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from typing import TYPE_CHECKING, Any

import psycopg

from keel.store.postgres._writes import Q, _Conn, _Row

log = logging.getLogger("keel.store.postgres")

#: The first key of every liveness lock ("kliv"); migrations lock under "keel".
LIVENESS_CLASS = 0x6B6C6976
#: Server-side keepalives of the liveness session: a vanished host is noticed
#: (and its lock dropped) after about 5 + 5 * 3 = 20 s, inside the default TTL.
SERVER_KEEPALIVES = "-ctcp_keepalives_idle=5 -ctcp_keepalives_interval=5 -ctcp_keepalives_count=3"
#: How often the holder makes sure its session (and its registration) still stands.
CHECK_INTERVAL = 2.0
#: How long a check may take before the session counts as lost.
CHECK_TIMEOUT = 10.0


def lock_key(schema: str, owner: str) -> int:
    """The second advisory-lock key of ``owner`` in ``schema`` (0 .. 2^31-1).

    A collision with another live worker's key only makes a dead worker look
    alive (its leases then expire by TTL); it never makes a live one look dead.
    """
    digest = hashlib.blake2b(f"{schema}\0{owner}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


class PgLivenessLock:
    """A worker's advisory lock and registration, kept up by a background task."""

    def __init__(self, connect: Any, owner: str, key: int, conn: _Conn) -> None:
        self._connect = connect
        self.owner = owner
        self.key = key
        self._conn: _Conn | None = conn
        self._held = True
        self._task = asyncio.get_running_loop().create_task(
            self._keep(), name=f"keel-liveness-{owner}"
        )

    @property
    def held(self) -> bool:
        return self._held

    async def release(self) -> None:
        task, conn = self._task, self._conn
        if task.done() and conn is None:
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        self._held, self._conn = False, None
        if conn is None:
            return
        # Unregister first, then end the session (which unlocks): no sweep sees
        # this owner registered without its lock.
        with contextlib.suppress(Exception):
            await conn.execute(Q["unregister_worker"], {"owner": self.owner})
        with contextlib.suppress(Exception):
            await conn.close()

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(CHECK_INTERVAL)
            conn = self._conn
            try:
                if conn is None:
                    conn = await take(self._connect, self.owner, self.key)
                    if conn is None:
                        continue  # the old session still holds it: not dead yet
                    self._conn, self._held = conn, True
                    log.warning("liveness lock of %s taken again", self.owner)
                    continue
                await asyncio.wait_for(self._check(conn), CHECK_TIMEOUT)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._held:
                    log.warning(
                        "liveness session of %s lost (%s): not claiming until it is back; "
                        "other workers may take its runs",
                        self.owner,
                        exc,
                    )
                self._held = False
                if conn is not None:
                    self._conn = None
                    with contextlib.suppress(Exception):
                        await conn.close()

    async def _check(self, conn: _Conn) -> None:
        """A round trip on the session; re-register if a sweep dropped us meanwhile
        (it saw our old session gone before this one took the lock)."""
        cur = await conn.execute(Q["worker_registered"], {"owner": self.owner})
        row = await cur.fetchone()
        if not (row and row[0]):
            await conn.execute(Q["register_worker"], {"owner": self.owner, "lock_key": self.key})


async def take(connect: Any, owner: str, key: int) -> _Conn | None:
    """A new connection holding ``owner``'s lock with the owner registered; ``None``
    if another session holds that lock."""
    conn: _Conn = await connect()
    try:
        cur = await conn.execute(
            "SELECT pg_try_advisory_lock(%(cls)s::int4, %(key)s::int4)",
            {"cls": LIVENESS_CLASS, "key": key},
        )
        row = await cur.fetchone()
        if not (row and row[0]):
            await conn.close()
            return None
        await conn.execute(Q["register_worker"], {"owner": owner, "lock_key": key})
    except BaseException:
        with contextlib.suppress(Exception):
            await conn.close()
        raise
    return conn


class LivenessMixin:
    """:class:`~keel.store.postgres.PostgresStore`'s liveness methods
    (see :mod:`keel.store.liveness`)."""

    url: str
    schema: str
    channel: str
    _kwargs: dict[str, Any]

    if TYPE_CHECKING:  # provided by PostgresStore

        async def _fetch(self, query: str, params: dict[str, Any]) -> list[_Row]: ...

        def _errors(self) -> contextlib.AbstractContextManager[None]: ...

    async def _connect_liveness(self) -> _Conn:
        kwargs = dict(self._kwargs)
        kwargs["options"] = f"{kwargs.get('options', '')} {SERVER_KEEPALIVES}".strip()
        with self._errors():
            return await psycopg.AsyncConnection.connect(self.url, **kwargs)

    async def hold_liveness(self, owner: str) -> PgLivenessLock | None:
        key = lock_key(self.schema, owner)
        with self._errors():
            conn = await take(self._connect_liveness, owner, key)
        if conn is None:
            log.warning("liveness lock of %s is held by another session", owner)
            return None
        return PgLivenessLock(self._connect_liveness, owner, key, conn)

    async def expire_dead_owners(self) -> int:
        params = {"lock_class": LIVENESS_CLASS, "channel": self.channel}
        [(expired, forgotten)] = await self._fetch("expire_dead_owners", params)
        if forgotten:
            log.warning(
                "expired %d lease(s) of dead worker(s) %s", expired, ", ".join(sorted(forgotten))
            )
        return int(expired)
