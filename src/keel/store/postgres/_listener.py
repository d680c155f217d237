"""LISTEN/NOTIFY wake-ups: a dedicated connection that wakes the store's change waiters.

Notifications only cut latency (callers re-check state and sweep periodically),
so the listener never raises to callers: a lost connection is re-established
in the background with backoff, and on reconnect every waiter is woken,
because notifications sent while it was away are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg import sql

log = logging.getLogger("keel.store.postgres")


class ChangeWaiters:
    """Futures of the coroutines waiting in one of ``store.changes``' waits."""

    def __init__(self) -> None:
        self._waiters: set[asyncio.Future[None]] = set()

    async def wait(self, timeout: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(fut)
        try:
            await asyncio.wait([fut], timeout=timeout)
        finally:
            self._waiters.discard(fut)

    def wake_all(self) -> None:
        waiters, self._waiters = self._waiters, set()
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)


#: NOTIFY payloads that cannot make work claimable: they wake ``changes.wait``
#: callers (result pollers) but not ``changes.wait_for_work`` callers (claim loops).
NOT_WORK = frozenset({"finished"})
#: The NOTIFY payload of a schedule created or resumed: it also wakes
#: ``changes.wait_for_schedules`` callers (schedule loops), whom nothing else wakes.
SCHEDULE = "schedule"


class Listener:
    """Keeps one connection LISTENing on ``channel``; a notification wakes ``waiters``,
    and also ``work_waiters`` unless its payload is in :data:`NOT_WORK`, and
    ``schedule_waiters`` if it is :data:`SCHEDULE`. A reconnect wakes all three.

    ``idle_check`` is how long the connection may stay silent before a
    ``SELECT 1`` makes sure it is still alive (TCP keepalives cover the rest).
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[psycopg.AsyncConnection[Any]]],
        channel: str,
        waiters: ChangeWaiters,
        work_waiters: ChangeWaiters | None = None,
        schedule_waiters: ChangeWaiters | None = None,
        *,
        idle_check: float = 30.0,
        max_backoff: float = 2.0,
    ) -> None:
        self._connect_fn = connect
        self._channel = channel
        self._waiters = waiters
        self._work_waiters = work_waiters or ChangeWaiters()
        self._schedule_waiters = schedule_waiters or ChangeWaiters()
        self._idle_check = idle_check
        self._max_backoff = max_backoff
        self._task: asyncio.Task[None] | None = None
        #: Times the connection was lost and re-established (for tests and metrics).
        self.reconnects = 0
        #: Set while a LISTEN connection is up.
        self.connected = asyncio.Event()

    async def start(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """LISTEN on ``conn`` (which the listener then owns) and start listening."""
        await self._listen(conn)
        self.connected.set()
        self._task = asyncio.create_task(self._run(conn), name=f"keel-listener-{self._channel}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _wake(self, payload: str | None) -> None:
        self._waiters.wake_all()
        if payload not in NOT_WORK:
            self._work_waiters.wake_all()
        if payload is None or payload == SCHEDULE:
            self._schedule_waiters.wake_all()

    async def _listen(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        conn = await self._connect_fn()
        try:
            await self._listen(conn)
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _run(self, conn: psycopg.AsyncConnection[Any] | None) -> None:
        delay = 0.05
        try:
            while True:
                try:
                    if conn is None:
                        conn = await self._connect()
                        self.reconnects += 1
                        self.connected.set()
                        delay = 0.05
                        log.info("LISTEN connection on %r re-established", self._channel)
                        self._wake(None)  # catch up on what was missed meanwhile
                    async for notify in conn.notifies(timeout=self._idle_check):
                        self._wake(notify.payload)
                    await conn.execute("SELECT 1")
                except Exception as exc:  # never let the listener die: it only cuts latency
                    self.connected.clear()
                    log.warning(
                        "LISTEN connection on %r lost or unavailable (%s); retrying in %.2fs",
                        self._channel,
                        exc,
                        delay,
                    )
                    if conn is not None:
                        await _close_quietly(conn)
                        conn = None
                    await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                    delay = min(delay * 2, self._max_backoff)
        finally:
            self.connected.clear()
            if conn is not None:
                await _close_quietly(conn)


async def _close_quietly(conn: psycopg.AsyncConnection[Any]) -> None:
    with contextlib.suppress(Exception):
        await conn.close()
