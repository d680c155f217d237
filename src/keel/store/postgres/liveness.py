"""Worker liveness on PostgreSQL: a session-level advisory lock per worker.

Each worker takes ``pg_advisory_lock(LIVENESS_CLASS, key)`` on a connection of
its own, kept open for its whole life, then registers ``(owner, key)`` in
``worker_locks``. The server drops the lock the moment that session ends: at
once when the process dies (the kernel closes its socket), and when the host
or the network dies, once the server's TCP keepalives give up on the socket
(set tighter than the defaults on this connection, :data:`SERVER_KEEPALIVES`);
the lease TTL still bounds whatever those miss. ``expire_dead_owners`` (see
queries.sql) finds registered owners whose lock no session holds and expires
their leases in one statement (see workers.py).

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
from collections.abc import Awaitable, Callable

from keel.store.postgres._pool import Conn, run
from keel.store.postgres._sql import DICT, Q

log = logging.getLogger("keel.store.postgres")

#: Opens a new connection for a liveness session.
Connect = Callable[[], Awaitable[Conn]]

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

    def __init__(self, connect: Connect, owner: str, key: int, conn: Conn) -> None:
        self._connect = connect
        self.owner = owner
        self.key = key
        self._conn: Conn | None = conn
        self._held = True
        self._task = asyncio.get_running_loop().create_task(
            self._keep(), name=f"keel-liveness-{owner}"
        )

    @property
    def held(self) -> bool:
        return self._held

    @property
    def released(self) -> bool:
        """Whether :meth:`release` ran (a lost session is not released: it is retaken)."""
        return self._task.done() and self._conn is None

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

    async def _check(self, conn: Conn) -> None:
        """A round trip on the session; re-register if a sweep dropped us meanwhile
        (it saw our old session gone before this one took the lock)."""
        [row] = await run(conn, Q["worker_registered"], {"owner": self.owner}, DICT)
        if not row["registered"]:
            await conn.execute(Q["register_worker"], {"owner": self.owner, "lock_key": self.key})


async def take(connect: Connect, owner: str, key: int) -> Conn | None:
    """A new connection holding ``owner``'s lock with the owner registered; ``None``
    if another session holds that lock."""
    conn = await connect()
    try:
        params = {"lock_class": LIVENESS_CLASS, "lock_key": key}
        [row] = await run(conn, Q["take_liveness"], params, DICT)
        if not row["taken"]:
            await conn.close()
            return None
        await conn.execute(Q["register_worker"], {"owner": owner, "lock_key": key})
    except BaseException:
        with contextlib.suppress(Exception):
            await conn.close()
        raise
    return conn
