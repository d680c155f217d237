"""PostgreSQL with large step results: concurrent multi-megabyte writes complete,
and a write that cannot complete fails within the statement timeout, releasing
the run's row lock so that another worker takes the run over."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import psycopg
import pytest

import keel
from keel.errors import StoreError
from keel.store.base import NewEvent
from keel.store.ports import Turn
from keel.store.postgres import PostgresStore
from keel.testing.conformance_helpers import new_run
from tests import pg
from tests.integration._support import wait_event, wait_until

pytestmark = pytest.mark.usefixtures("_require_pg")

MB = 1024 * 1024
gate = threading.Event()  # lets the gated step return
started = threading.Event()  # the gated step has started
attempts: list[int] = []  # one entry per execution of the gated step


@pytest.fixture
def _require_pg() -> None:
    pg.require_postgres()
    gate.clear()
    started.clear()
    attempts.clear()


@keel.step(name="large.make")
def make(size: int, fill: str) -> str:
    return fill * size


@keel.workflow(name="large.values")
async def large_values(size: int, fill: str) -> int:
    value = await make(size, fill)
    assert value == fill * size
    return len(value)


@keel.step(name="large.gated")
def gated(size: int) -> str:
    attempts.append(size)
    started.set()
    gate.wait(30)
    return "g" * size


@keel.workflow(name="large.gated_wf")
async def gated_wf(size: int) -> int:
    return len(await gated(size))


async def test_concurrent_multi_megabyte_step_results_finish() -> None:
    """Forty runs whose steps return 50 KB-8 MB at once: their writes queue up
    for group commits, which used to freeze inside psycopg's pipeline (server in
    ClientRead, client waiting to read) holding the runs' row locks, in about
    half of such rounds."""
    sizes = [50 * 1024 + (i * 7919 * 1024) % (8 * MB - 50 * 1024) for i in range(40)]
    worker = keel.Worker(PostgresStore(pg.fresh_database_url()), lease_ttl=10.0, cache=False)
    async with worker:
        client = worker.client()
        runs = [await client.start(large_values, n, chr(97 + i % 26)) for i, n in enumerate(sizes)]
        results = await asyncio.wait_for(
            asyncio.gather(*(run.result(timeout=40) for run in runs)), timeout=45
        )
        history = await client.history(runs[-1].run_id)
    assert results == sizes  # each workflow, replayed from the journal, saw its value whole
    [done] = [e for e in history if e.type == "step_completed"]
    assert len(done.data["result"]) == sizes[-1]


async def test_concurrent_multi_megabyte_journal_writes_commit_together() -> None:
    """The store's own view: multi-megabyte appends issued at once (so all but the
    first queue for one group commit) all commit, and read back whole."""
    store = PostgresStore(pg.fresh_database_url())
    await store.open()
    try:
        leases = []
        for i in range(6):
            _, lease, _ = await store.runs.create(new_run(f"big-{i}"), lease_owner="w")
            assert lease is not None
            leases.append(lease)
        datas = [b'{"v":"' + bytes([97 + i]) * (3 * MB + i * MB) + b'"}' for i in range(6)]
        await asyncio.wait_for(
            asyncio.gather(
                *(
                    store.runs.commit(
                        lease, Turn(1, [NewEvent("step_completed", "step:s#0", data)])
                    )
                    for lease, data in zip(leases, datas, strict=True)
                )
            ),
            timeout=45,
        )
        for lease, data in zip(leases, datas, strict=True):
            events = await store.reads.history(lease.run_id, after_seq=0)
            assert [e.data for e in events] == [data]
    finally:
        await store.close()


async def test_blocked_write_fails_within_the_bound_and_another_worker_takes_the_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A worker whose journal write cannot complete (the run's row is locked from
    another connection) gets a StoreError within its statement timeout instead of
    waiting forever; the run, no longer locked, goes to a second worker."""
    url = pg.fresh_database_url()
    first = keel.Worker(
        PostgresStore(url, statement_timeout=1.0), lease_ttl=3.0, cache=False, owner="first"
    )
    caplog.set_level(logging.ERROR, logger="keel")
    # Another session will hold the run's row: the step's journal write must wait for it.
    blocker = await psycopg.AsyncConnection.connect(url, options="-csearch_path=keel")
    try:
        async with first:
            run = await first.client().start(gated_wf, 2 * MB)
            await wait_event(started, "the gated step to start")
            await blocker.execute("BEGIN")
            await blocker.execute("SELECT 1 FROM runs WHERE run_id = %s FOR UPDATE", [run.run_id])
            gate.set()

            def write_failed() -> list[Any]:
                return [
                    r
                    for r in caplog.records
                    if r.exc_info
                    and isinstance(r.exc_info[1], StoreError)
                    and run.run_id in r.getMessage()
                ]

            # Detected while the lock is still held: the write did not wait for it.
            [record, *_] = await wait_until(write_failed, "the blocked write to fail", timeout=20)
            assert record.exc_info is not None
            assert "statement timeout" in str(record.exc_info[1].__cause__)
        # The first worker stopped (its statements bounded too) before the lock goes.
    finally:
        await blocker.execute("ROLLBACK")
        await blocker.close()
    # The first worker is gone; its lease expires and a second worker finishes the run.
    second = keel.Worker(PostgresStore(url), lease_ttl=3.0, cache=False, owner="second")
    async with second:
        result = await second.client().result(run.run_id, timeout=40)
        history = await second.client().history(run.run_id)
    assert result == 2 * MB
    claims = [e.data for e in history if e.type == "step_completed"]
    assert len(claims) == 1  # journaled once, by the second worker...
    assert len(attempts) == 2  # ...which ran the step again: the first one's result was lost
