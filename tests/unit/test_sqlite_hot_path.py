"""The SQLite store's hot path: inline writes, group commit, wake-up channels, run ids."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from keel.client import new_run_id
from keel.core.states import RunState
from keel.store import SQLiteStore
from keel.store.ports import Finish, Turn
from keel.testing.conformance import event, new_run


def run(body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(body())


def _thread_name(conn: sqlite3.Connection) -> str:
    return threading.current_thread().name


def test_a_lone_write_runs_inline_and_concurrent_ones_share_a_commit(tmp_path: Path) -> None:
    async def main() -> None:
        store = SQLiteStore(tmp_path / "keel.db")
        await store.open()
        writer = store.db.writer
        assert writer is not None
        await asyncio.sleep(0.05)  # let the watcher's first look at the connection pass
        commits = writer.commits
        # Alone in its event-loop tick, with the writer thread idle: on the loop's thread.
        assert await writer.call(_thread_name) == threading.current_thread().name
        assert writer.commits == commits + 1
        # Several in one tick: handed to the writer thread, one transaction.
        names = await asyncio.gather(*(writer.call(_thread_name) for _ in range(5)))
        assert set(names) == {"keel-sqlite-writer"}
        assert writer.commits == commits + 2
        await store.close()

    run(main)


def test_an_inline_write_never_waits_on_the_loop_for_another_writer(tmp_path: Path) -> None:
    path = tmp_path / "keel.db"

    async def main() -> None:
        store = SQLiteStore(path)
        await store.open()
        writer = store.db.writer
        assert writer is not None
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another writer holds the file's write lock
        try:
            write = asyncio.create_task(writer.call(_thread_name))
            ticks = 0
            start = time.monotonic()
            while time.monotonic() - start < 0.3:
                await asyncio.sleep(0.01)
                ticks += 1
            assert not write.done()
            assert ticks >= 10  # the loop kept running meanwhile
        finally:
            other.execute("COMMIT")
            other.close()
        # The writer thread took it over and retried until the lock was free.
        assert await asyncio.wait_for(write, 5) == "keel-sqlite-writer"
        assert await writer.call(_thread_name) == threading.current_thread().name
        await store.close()

    run(main)


def test_a_run_finishing_wakes_result_waiters_but_not_work_waiters(tmp_path: Path) -> None:
    async def main() -> None:
        store = SQLiteStore(tmp_path / "keel.db", poll_interval=0.01)
        await store.open()
        _, lease, _ = await store.runs.create(new_run("r1"), lease_owner="w1")
        assert lease is not None
        work = asyncio.create_task(store.changes.wait_for_work(10))
        change = asyncio.create_task(store.changes.wait(10))
        await asyncio.sleep(0.05)
        # Its own journal writes and the run finishing: nothing became claimable.
        await store.runs.commit(lease, Turn(1, [event(1)]))
        await store.runs.commit(
            lease, Turn(2, [event(2)], end=Finish(RunState.COMPLETED, result=b"1"))
        )
        await asyncio.wait_for(change, 5)
        await asyncio.sleep(0.1)  # several watcher polls: the store's own commits are not news
        assert not work.done()
        # A run nobody leases is claimable work.
        await store.runs.create(new_run("r2"))
        await asyncio.wait_for(work, 5)
        await store.close()

    run(main)


def test_work_waiters_hear_of_another_stores_commits(tmp_path: Path) -> None:
    path = tmp_path / "keel.db"

    async def main() -> None:
        a = SQLiteStore(path, poll_interval=0.01)
        b = SQLiteStore(path)
        await a.open()
        await b.open()
        work = asyncio.create_task(a.changes.wait_for_work(10))
        await asyncio.sleep(0.05)
        assert not work.done()
        start = time.monotonic()
        await b.runs.create(new_run("r1"))
        await asyncio.wait_for(work, 5)
        assert time.monotonic() - start < 2
        await a.close()
        await b.close()

    run(main)


def test_new_run_ids_are_time_ordered_uuid7s() -> None:
    first = new_run_id()
    parsed = uuid.UUID(first)
    assert str(parsed) == first
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert abs((parsed.int >> 80) - time.time() * 1000) < 60_000  # Unix milliseconds
    time.sleep(0.002)
    ids = [new_run_id() for _ in range(100)]
    assert all(first < later for later in ids)  # a later millisecond sorts after
    assert len(set(ids)) == len(ids)
