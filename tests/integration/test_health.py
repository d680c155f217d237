"""The health checks (``keel.observe.health``, ``/readyz``, ``keel health``) on
every backend: healthy, no live worker, an overdue run, a schema this Keel does
not know, a store that is missing or down."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import keel
from keel.observe.health import check, liveness
from keel.store.sqlite import SQLiteStore
from tests import pg
from tests.integration._support import wait_until

KEEL = [sys.executable, "-c", "import sys; from keel.cli.main import main; sys.exit(main())"]


@keel.step(name="health.noop")
def noop() -> int:
    return 1


@keel.workflow(name="health.flow")
async def flow() -> int:
    return await noop()


def by_name(report: Any) -> dict[str, bool]:
    return {c.name: c.ok for c in report.checks}


async def test_ready_with_a_live_worker_and_nothing_overdue(
    make_store: Callable[[], Any],
) -> None:
    store = make_store()
    await store.open()
    try:
        async with keel.Worker(make_store(), poll_interval=0.05) as worker:
            assert await worker.client().start(flow) is not None
            report = await check(store)
            assert by_name(report) == {"store": True, "schema": True, "workers": True,
                                       "overdue": True}, report  # fmt: skip
            assert report.live and report.ready
            assert report.to_dict()["ready"] is True
    finally:
        await store.close()


async def test_without_a_live_worker_it_is_live_but_not_ready(
    make_store: Callable[[], Any],
) -> None:
    store = make_store()
    await store.open()
    try:
        report = await check(store)
        assert by_name(report) == {"store": True, "schema": True, "workers": False,
                                   "overdue": True}, report  # fmt: skip
        assert report.live and not report.ready
        assert (await liveness(store)).live
    finally:
        await store.close()


async def test_a_run_waiting_too_long_to_be_claimed_is_overdue(
    make_store: Callable[[], Any],
) -> None:
    store = make_store()
    await store.open()
    try:
        # No worker: the run stays due. (The client is not closed: it would
        # close the store it was given.)
        await keel.Client(store).start(flow)

        async def overdue() -> bool:
            return not by_name(await check(store, overdue_after=0.05))["overdue"]

        await wait_until(overdue, "the run to be overdue by 0.05s")
        assert by_name(await check(store, overdue_after=3600))["overdue"]
        assert (await store.reads.run_stats()).oldest_due_age > 0.05
    finally:
        await store.close()


async def test_a_schema_newer_than_this_keel_is_not_ready(tmp_path: Path) -> None:
    path = tmp_path / "keel.db"
    store = SQLiteStore(path)
    await store.open()
    try:
        assert by_name(await check(store))["schema"]
        newer = str(SQLiteStore.LATEST_SCHEMA + 1)
        with sqlite3.connect(path) as conn:  # another process's newer Keel migrated it
            conn.execute("UPDATE keel_meta SET value = ? WHERE key = 'schema_version'", (newer,))
        report = await check(store)
        (schema,) = [c for c in report.checks if c.name == "schema"]
        assert not schema.ok and "newer" in schema.detail, report
    finally:
        await store.close()


def keel_health(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KEEL, "health", *args], capture_output=True, text=True, timeout=60, check=False
    )


async def test_keel_health_exits_zero_only_when_ready(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keel.db'}"
    missing = await asyncio.to_thread(keel_health, "--db", url)
    assert missing.returncode == 1 and missing.stdout.startswith("store  FAIL  no Keel database")
    async with keel.Worker(url, poll_interval=0.05):
        ready = await asyncio.to_thread(keel_health, "--db", url)
        assert ready.returncode == 0, ready.stdout + ready.stderr
        assert ready.stdout.splitlines()[-1] == "healthy"
    alone = await asyncio.to_thread(keel_health, "--db", url)  # its worker has stopped
    assert alone.returncode == 1 and "workers  FAIL  no live worker" in alone.stdout
    live = await asyncio.to_thread(keel_health, "--db", url, "--live")
    assert live.returncode == 0 and live.stdout.splitlines() == [
        "store  ok    reachable",
        "healthy",
    ]


async def test_keel_health_on_postgres_without_a_schema_or_a_server() -> None:
    pg.require_postgres()
    empty = pg.empty_database_url()
    try:
        found = await asyncio.to_thread(keel_health, "--db", empty, "--json")
    finally:
        pg.drop_database_later(empty)
    assert found.returncode == 1
    assert '"live": false' in found.stdout and "no Keel schema" in found.stdout, found.stdout
    down = await asyncio.to_thread(keel_health, "--db", "postgresql://postgres@127.0.0.1:1/x")
    assert down.returncode == 1 and down.stdout.startswith("store  FAIL"), down.stdout


@pytest.mark.parametrize("live", [False, True])
async def test_keel_health_on_postgres_when_well(live: bool) -> None:
    pg.require_postgres()
    url = pg.fresh_database_url()
    try:
        async with keel.Worker(url, poll_interval=0.05):
            args = ("--db", url, *(("--live",) if live else ()))
            found = await asyncio.to_thread(keel_health, *args)
    finally:
        pg.drop_database_later(url)
    assert found.returncode == 0, found.stdout + found.stderr
