"""The PostgreSQL store passes the store conformance suite, and survives lost connections."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import psycopg
import pytest

from keel.core.states import RunState
from keel.errors import ConfigurationError, StoreError
from keel.store import open_store
from keel.store.base import NewEvent, NewRun
from keel.store.ports import Finish, Suspend, Turn
from keel.store.postgres import PostgresStore
from keel.store.postgres._conn import ClockOffset
from keel.store.postgres._sql import Q
from keel.store.postgres.turns import turn_statement
from keel.testing.conformance import StoreConformance, StoreFactory, event, leased, new_run
from keel.testing.conformance_schedules import new_schedule
from tests.pg import pg_url, postgres_server  # noqa: F401  (fixtures)

T = TypeVar("T")


class TestPostgresStore(StoreConformance):
    @pytest.fixture
    def store_factory(self, pg_url: str) -> StoreFactory:  # noqa: F811
        # Every store of one test shares the database, like processes sharing it.
        return lambda: PostgresStore(pg_url)


def test_open_store_maps_postgres_urls() -> None:
    for url in ("postgresql://u@h/db", "postgres://u@h:5433/db?sslmode=disable"):
        store = open_store(url)
        assert isinstance(store, PostgresStore) and store.url == url
    with pytest.raises(ConfigurationError):
        PostgresStore("postgresql://u@h/db", schema="Bad-Name")
    with pytest.raises(ConfigurationError):
        PostgresStore("postgresql://u@h/db", min_size=3, max_size=2)


def test_unreachable_server_is_a_store_error_not_a_hang() -> None:
    async def main() -> None:
        store = PostgresStore("postgresql://postgres@127.0.0.1:1/none", connect_timeout=1)
        start = time.monotonic()
        with pytest.raises(StoreError, match=r"127\.0\.0\.1:1/"):
            await store.open()
        assert time.monotonic() - start < 5
        with pytest.raises(StoreError, match="not open"):
            await store.reads.get_run("r")

    asyncio.run(main())


def _kill_other_backends(url: str) -> int:
    """Terminate every other connection to the database of ``url`` (a server restart,
    locally) and wait until they are gone: termination is asynchronous."""
    with psycopg.connect(url, autocommit=True) as conn:
        pids = [
            row[0]
            for row in conn.execute(
                "SELECT pid FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
        ]
        conn.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,))
        deadline = time.monotonic() + 10
        while conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY (%s::int[])", (pids,)
        ).fetchone() != (0,):
            assert time.monotonic() < deadline, "terminated backends did not go away"
            time.sleep(0.01)
    return len(pids)


async def _eventually(op: Callable[[], Awaitable[T]], within: float = 5.0) -> T:
    deadline = time.monotonic() + within
    while True:
        try:
            return await op()
        except StoreError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


def test_store_recovers_after_its_connections_are_killed(pg_url: str) -> None:  # noqa: F811
    async def main() -> None:
        store = PostgresStore(pg_url, min_size=2, max_size=4)
        other = PostgresStore(pg_url)
        await store.open()
        await other.open()
        try:
            await store.runs.create(new_run("before"))
            listener = store.db.listener
            assert listener is not None and listener.connected.is_set()
            assert _kill_other_backends(pg_url) >= 3  # pool connections and the listeners

            # Idle pooled connections killed by the server are spotted and replaced
            # before use: no operation fails.
            run = await store.reads.get_run("before")
            assert run is not None and run.run_id == "before"
            await store.runs.create(new_run("after"))
            await other.runs.create(new_run("other"))

            # The listener reconnects in the background and wakes waiters on return.
            await _until(lambda: listener.reconnects >= 1)
            waiter = asyncio.create_task(store.changes.wait(10))
            await asyncio.sleep(0.05)
            await _eventually(lambda: other.runs.create(new_run("wakes")))
            start = time.monotonic()
            await asyncio.wait_for(waiter, 5)
            assert time.monotonic() - start < 2
        finally:
            await other.close()
            await store.close()

    asyncio.run(main())


def test_a_connection_lost_mid_query_is_a_store_error(pg_url: str) -> None:  # noqa: F811
    async def main() -> None:
        store = PostgresStore(pg_url, min_size=1, max_size=2)
        await store.open()
        try:

            async def slow() -> None:
                async with store.db.pool.connection() as conn:
                    await conn.execute("SELECT pg_sleep(10)")

            task = asyncio.create_task(slow())
            await asyncio.sleep(0.2)
            _kill_other_backends(pg_url)
            with pytest.raises(StoreError, match="failed or was lost"):
                await asyncio.wait_for(task, 5)
            # The broken connection went back to the pool, which discarded it.
            assert await _eventually(lambda: store.reads.get_run("nope")) is None
        finally:
            await store.close()

    asyncio.run(main())


async def _until(cond: Callable[[], bool], within: float = 10.0) -> None:
    for _ in range(int(within / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_clock_offset_is_zero_for_a_local_server(pg_url: str) -> None:  # noqa: F811
    async def main() -> None:
        store = PostgresStore(pg_url)
        await store.open()
        try:
            assert abs(await store.now() - time.time()) < 0.01
            await store.runs.claim("w", limit=1, ttl=1)  # refreshes the offset
            assert store.db.clock.offset == 0.0  # same machine, same clock
        finally:
            await store.close()

    asyncio.run(main())


def test_signal_committed_while_suspend_waits_for_the_row_still_wakes(
    pg_url: str,  # noqa: F811
) -> None:
    """A sender holding the run row when suspend_run's snapshot is taken: the
    mailbox check cannot see its signal, yet the run must not sleep through it."""

    async def main() -> None:
        store = PostgresStore(pg_url)
        await store.open()
        sender = await psycopg.AsyncConnection.connect(pg_url, options="-csearch_path=keel")
        try:
            _, lease, _ = await store.runs.create(new_run("r1"), lease_owner="w1")
            assert lease is not None
            params = {"run_id": "r1", "name": "go", "payload": b"1", "channel": store.channel}
            params["delivery_id"] = None
            await sender.execute(Q["send_signal"], params)  # row locked, not committed
            suspend = asyncio.create_task(
                store.runs.commit(lease, Turn(1, [], end=Suspend(None, wake_on_signals=["go"])))
            )
            await until_blocked_on_a_lock(pg_url)
            await sender.commit()
            await asyncio.wait_for(suspend, 5)
            run = await store.reads.get_run("r1")
            assert run is not None and run.wake_at is not None
            assert run.wake_at <= await store.now()
        finally:
            await sender.close()
            await store.close()

    asyncio.run(main())


async def until_blocked_on_a_lock(url: str) -> None:
    """Wait until one session of the database waits on a lock (within 5 s)."""
    query = (
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for _ in range(250):
            cur = await conn.execute(query)
            if (await cur.fetchone()) == (1,):
                return
            await asyncio.sleep(0.02)
    raise AssertionError("no session of the database waited for a row lock")


def test_racing_claimers_take_each_run_exactly_once(pg_url: str) -> None:  # noqa: F811
    async def main() -> None:
        stores = [PostgresStore(pg_url, max_size=3) for _ in range(4)]
        await asyncio.gather(*(s.open() for s in stores))
        try:
            for i in range(60):
                await stores[0].runs.create(new_run(f"r{i:02d}"))

            async def claimer(store: PostgresStore, owner: str) -> list[str]:
                got: list[str] = []
                for _ in range(40):
                    got += [c.lease.run_id for c in await store.runs.claim(owner, limit=3, ttl=30)]
                return got

            results = await asyncio.gather(
                *(claimer(s, f"w{i}.{j}") for i, s in enumerate(stores) for j in range(3))
            )
            claimed = [run_id for got in results for run_id in got]
            assert sorted(claimed) == [f"r{i:02d}" for i in range(60)]
        finally:
            await asyncio.gather(*(s.close() for s in stores))

    asyncio.run(main())


def test_clock_offset_moves_only_as_far_as_a_sample_proves() -> None:
    clock = ClockOffset()
    clock.observe(db_now=100.0005, sent=100.0, received=100.001)  # consistent with 0
    assert clock.offset == 0.0
    clock.observe(db_now=105.0, sent=100.0, received=100.001)  # db is ~5s ahead
    assert clock.offset == pytest.approx(4.999)
    clock.observe(db_now=104.9995, sent=100.0, received=100.001)  # still consistent
    assert clock.offset == pytest.approx(4.999)
    clock.observe(db_now=90.0, sent=100.0, received=100.001)  # the db clock stepped back
    assert clock.offset == pytest.approx(-10.0, abs=2e-6)
    assert abs(clock.now() - (time.time() - 10.0)) < 0.01


def test_wait_for_work_is_not_woken_by_runs_finishing(pg_url: str) -> None:  # noqa: F811
    async def main() -> None:
        store, other = PostgresStore(pg_url), PostgresStore(pg_url)
        await store.open()
        await other.open()
        try:
            _, lease, _ = await other.runs.create(new_run("done"), lease_owner="w")
            assert lease is not None
            await store.changes.wait(0.1)  # absorb any late notice of that write
            work = asyncio.create_task(store.changes.wait_for_work(10))
            change = asyncio.create_task(store.changes.wait(10))
            await asyncio.sleep(0.05)
            end = NewEvent("run_completed", None, b"{}")
            await other.runs.commit(
                lease, Turn(1, [end], end=Finish(RunState.COMPLETED, result=b"1"))
            )
            await asyncio.wait_for(change, 5)  # result pollers are woken
            await asyncio.sleep(0.2)
            assert not work.done()  # claim loops are not: nothing became claimable
            await other.runs.create(new_run("new"))
            await asyncio.wait_for(work, 5)
        finally:
            await other.close()
            await store.close()

    asyncio.run(main())


def test_a_failing_write_in_a_group_commit_fails_alone(pg_url: str) -> None:  # noqa: F811
    """Concurrent writes share one transaction; when one statement fails, the
    batch is rolled back and rerun one by one: the others still commit."""

    async def main() -> None:
        store = PostgresStore(pg_url)
        await store.open()
        try:
            leases = [await leased(store, f"g{i}") for i in range(4)]
            bad = NewEvent(None, None, b"{}")  # type: ignore[arg-type]  # NOT NULL violation
            results = await asyncio.gather(
                *(
                    store.runs.commit(lease, Turn(1, [bad if i == 2 else event(1)]))
                    for i, lease in enumerate(leases)
                ),
                return_exceptions=True,
            )
            assert [isinstance(r, StoreError) for r in results] == [False, False, True, False]
            for i in range(4):
                run = await store.reads.get_run(f"g{i}")
                assert run is not None and run.next_seq == (1 if i == 2 else 2)
                assert len(await store.reads.history(f"g{i}")) == (1 if i == 2 else 2)
        finally:
            await store.close()

    asyncio.run(main())


def test_wait_for_schedules_is_woken_only_by_schedule_changes(pg_url: str) -> None:  # noqa: F811
    async def main() -> None:
        store, other = PostgresStore(pg_url), PostgresStore(pg_url)
        await store.open()
        await other.open()
        try:
            await store.changes.wait(0.1)
            schedules = asyncio.create_task(store.changes.wait_for_schedules(10))
            work = asyncio.create_task(store.changes.wait_for_work(10))
            await asyncio.sleep(0.05)
            await other.runs.create(new_run("busy"))  # work, not a schedule
            await asyncio.wait_for(work, 5)
            await asyncio.sleep(0.2)
            assert not schedules.done()  # schedule loops sleep on through busy traffic
            now = await other.now()
            await other.schedules.create(new_schedule("s", now + 3600))
            await asyncio.wait_for(schedules, 5)
            resumed = asyncio.create_task(store.changes.wait_for_schedules(10))
            await asyncio.sleep(0.05)
            await other.schedules.pause("s")
            await other.schedules.resume("s", now + 60)
            await asyncio.wait_for(resumed, 5)
        finally:
            await other.close()
            await store.close()

    asyncio.run(main())


def test_child_ending_while_parent_suspend_waits_for_the_row_still_wakes(
    pg_url: str,  # noqa: F811
) -> None:
    """A child's finish_run holding the parent row when the parent's suspend_run
    snapshot is taken: the parent must not sleep through the child's end."""

    async def main() -> None:
        store = PostgresStore(pg_url)
        await store.open()
        finisher = await psycopg.AsyncConnection.connect(pg_url, options="-csearch_path=keel")
        try:
            _, lease, _ = await store.runs.create(new_run("p"), lease_owner="w1")
            assert lease is not None
            child = NewRun(
                "p/c",
                "wf",
                "v1",
                b"{}",
                NewEvent("run_started", None, b"{}"),
                parent_run_id="p",
                parent_close="abandon",
                depth=1,
            )
            started = NewEvent("child_started", "child:wf#0", b"{}")
            await store.runs.commit(lease, Turn(1, [started], children=[child]))
            [claimed] = await store.runs.claim("w2", limit=1, ttl=30)
            end = Finish(RunState.COMPLETED, result=b"1")
            sql, params = turn_statement(claimed.lease, Turn(1, [], end=end), store.channel)
            cur = await finisher.execute(sql, params)  # rows locked, not committed
            assert await cur.fetchall() == [("p/c",)]
            suspend = asyncio.create_task(
                store.runs.commit(lease, Turn(2, [], end=Suspend(None, wake_on_children=["p/c"])))
            )
            await until_blocked_on_a_lock(pg_url)
            await finisher.commit()
            await asyncio.wait_for(suspend, 5)
            run = await store.reads.get_run("p")
            assert run is not None and run.wake_at is not None
            assert run.wake_at <= await store.now()
        finally:
            await finisher.close()
            await store.close()

    asyncio.run(main())
