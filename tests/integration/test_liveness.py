"""Worker liveness locks at the store level (SQLite, PostgreSQL), several stores
in this process acting as several workers on one database.

The process deaths themselves are in tests/acceptance/test_failover.py (real
workers, SIGKILL); here a lock is dropped the way death drops it (the file's
descriptor closed; the PostgreSQL session terminated) to check who is judged
dead, that fencing holds, and that a worker whose session was cut comes back.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from keel.errors import LeaseLostError
from keel.store.base import NewTask
from keel.store.memory import MemoryStore
from keel.store.ports import Turn
from keel.testing.conformance_helpers import event, new_run

LIVE = pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)


async def opened(make_store: Callable[[], Any]) -> Any:
    store = make_store()
    await store.open()
    return store


def die(lock: Any) -> None:
    """What the death of the holder's process does to its lock (nothing else)."""
    if hasattr(lock, "_fd"):  # SQLite: the kernel closes the file, dropping the flock
        os.close(lock._fd)
        lock._fd = None
    else:  # PostgreSQL: the server ends the session; see test_cut_session_*
        raise AssertionError("use pg_terminate_backend")


async def terminate_session(store: Any, lock: Any) -> None:
    """End the lock's session and wait until its backend has exited: a bare
    pg_terminate_backend only signals it, and until it exits it holds the lock."""
    pid = lock._conn.info.backend_pid
    async with await psycopg.AsyncConnection.connect(store.url, autocommit=True) as conn:
        cur = await conn.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,))
        assert await cur.fetchone() == (True,), "the backend did not exit within 10 s"


async def kill_holder(store: Any, lock: Any) -> None:
    if hasattr(lock, "_fd"):
        die(lock)
    else:
        await terminate_session(store, lock)
        lock._task.cancel()  # a dead process does not come back
        await lock._conn.close()


@LIVE
async def test_only_registered_owners_without_their_lock_are_dead(
    make_store: Callable[[], Any],
) -> None:
    a, b = await opened(make_store), await opened(make_store)
    try:
        lock_a = await a.workers.hold_liveness("worker-a")
        lock_b = await b.workers.hold_liveness("worker-b")
        assert lock_a is not None and lock_b is not None and lock_a.held
        for run_id in ("r-a", "r-b", "r-plain"):
            await a.runs.create(new_run(run_id))
        [held_a] = await a.runs.claim("worker-a", limit=1, ttl=30.0)
        [held_b] = await b.runs.claim("worker-b", limit=1, ttl=30.0)
        [plain] = await b.runs.claim("plain", limit=1, ttl=30.0)  # never took a lock

        # Two workers of one process, and an owner without a lock: all alive.
        assert await b.workers.expire_dead_owners() == 0
        assert await a.workers.expire_dead_owners() == 0

        await kill_holder(a, lock_a)
        assert await b.workers.expire_dead_owners() == 1
        assert await b.workers.expire_dead_owners() == 0  # expired once, then forgotten
        [taken] = await b.runs.claim("worker-b", limit=5, ttl=30.0)
        assert taken.run.run_id == held_a.run.run_id
        assert taken.lease.token > held_a.lease.token
        with pytest.raises(LeaseLostError):  # the dead holder's write is fenced off
            await a.runs.commit(held_a.lease, Turn(held_a.run.next_seq, [event(1)]))
        rows = await b.reads.get_runs([held_b.run.run_id, plain.run.run_id])
        assert rows[held_b.run.run_id].lease_owner == "worker-b"
        assert rows[plain.run.run_id].lease_owner == "plain"
        assert rows[plain.run.run_id].lease_token == plain.lease.token
        await lock_b.release()
    finally:
        await a.close()
        await b.close()


@LIVE
async def test_a_dead_owners_task_leases_expire_early_too(
    make_store: Callable[[], Any],
) -> None:
    """A task worker that died holding dispatched steps (and no run): its task
    leases expire at the sweep, not after their TTL; the next claim takes each
    at its next attempt, and the dead holder's completion is fenced off."""
    a, b = await opened(make_store), await opened(make_store)
    try:
        lock_a = await a.workers.hold_liveness("tasker-a")
        lock_b = await b.workers.hold_liveness("tasker-b")
        assert lock_a is not None and lock_b is not None
        run = await b.runs.create(new_run("r-task"), lease_owner="driver", lease_ttl=30.0)
        lease = run[1]
        assert lease is not None
        task = NewTask("step:render#0", "render", "q", 0, b"[]", 3)
        await b.runs.commit(lease, Turn(1, [event(1)], tasks=[task]))
        [(held, record)] = await a.tasks.claim("tasker-a", ["q"], limit=1, ttl=600.0)
        assert record.attempt == 1
        assert await b.tasks.claim("tasker-b", ["q"], limit=1, ttl=600.0) == []
        assert await b.workers.expire_dead_owners() == 0  # alive: nothing expires

        await kill_holder(a, lock_a)
        assert await b.workers.expire_dead_owners() == 1  # its one task lease, long before 600 s
        [(taken, again)] = await b.tasks.claim("tasker-b", ["q"], limit=1, ttl=600.0)
        assert (again.task_id, again.attempt) == (record.task_id, 2)  # the lost attempt counts
        with pytest.raises(LeaseLostError):
            await a.tasks.complete(held, b'"late"')
        await b.tasks.complete(taken, b'"done"')
        await lock_b.release()
    finally:
        await a.close()
        await b.close()


@LIVE
async def test_same_owner_twice_gets_no_second_lock(make_store: Callable[[], Any]) -> None:
    a, b = await opened(make_store), await opened(make_store)
    try:
        first = await a.workers.hold_liveness("twin")
        assert first is not None
        assert await b.workers.hold_liveness("twin") is None
        await first.release()
        again = await b.workers.hold_liveness("twin")  # released: free to take
        assert again is not None
        await again.release()
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_cut_session_is_taken_again(make_store: Callable[[], Any]) -> None:
    """A live worker whose liveness session is cut (a network blip, a terminated
    backend) is judged dead meanwhile (its leases expire: its writes are fenced),
    then takes the lock again and is alive.
    (A SQLite flock cannot be lost by a live process.)"""
    a, b = await opened(make_store), await opened(make_store)
    try:
        lock = await a.workers.hold_liveness("blip")
        assert lock is not None
        await a.runs.create(new_run("r-blip"))
        [held] = await a.runs.claim("blip", limit=1, ttl=30.0)
        await terminate_session(a, lock)
        assert await b.workers.expire_dead_owners() == 1
        deadline = time.monotonic() + 20
        while lock.held:  # the holder's next check finds the session gone...
            assert time.monotonic() < deadline, "the lost session was never noticed"
            await asyncio.sleep(0.05)
        while not lock.held:  # ...and takes the lock again
            assert time.monotonic() < deadline, "the lock was never taken again"
            await asyncio.sleep(0.05)
        assert await b.workers.expire_dead_owners() == 0
        with pytest.raises(LeaseLostError):
            await a.runs.commit(held.lease, Turn(held.run.next_seq, [event(1)]))
        await lock.release()
    finally:
        await a.close()
        await b.close()


async def test_memory_store_offers_no_liveness() -> None:
    store = MemoryStore()
    await store.open()
    assert await store.workers.hold_liveness("w1") is None
    assert await store.workers.expire_dead_owners() == 0


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_files_of_dead_workers_are_cleaned_up(make_store: Callable[[], Any]) -> None:
    """A worker that died holding no lease is found by no sweep: the next worker
    to start deletes its file; one that died holding leases has them expired first."""
    from keel.store.sqlite.liveness import lock_dir

    a, b = await opened(make_store), await opened(make_store)
    try:
        idle = await a.workers.hold_liveness("idle-dead")
        busy = await a.workers.hold_liveness("busy-dead")
        await a.runs.create(new_run("r-busy"))
        [held] = await a.runs.claim("busy-dead", limit=1, ttl=30.0)
        folder = lock_dir(a.path)
        assert len(list(folder.glob("*.lock"))) == 2
        die(idle)
        die(busy)
        fresh = await b.workers.hold_liveness("fresh")
        assert fresh is not None
        assert [p.read_text() for p in folder.glob("*.lock")] == ["fresh"]
        [taken] = await b.runs.claim("fresh", limit=1, ttl=30.0)  # expired at that start
        assert taken.run.run_id == held.run.run_id and taken.lease.token > held.lease.token
        await fresh.release()
        assert list(folder.glob("*.lock")) == []
    finally:
        await a.close()
        await b.close()
