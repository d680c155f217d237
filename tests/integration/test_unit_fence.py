"""The fence around unit tests (tests/fence.py) stops databases and processes,
records each attempt, and lets the PostgreSQL harness's own threads through."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from keel.store.postgres import PostgresStore
from keel.store.sqlite import SQLiteStore
from tests.fence import FENCE, HARNESS_THREADS, FenceError

URL = "postgresql://postgres@127.0.0.1:9/never"  # never reached: the fence stops it first


async def open_sqlite(path: Path) -> None:
    store = SQLiteStore(path / "keel.db")
    try:
        await store.open()
    finally:
        await store.close()


async def open_postgres() -> None:
    store = PostgresStore(URL)
    try:
        await store.open()
    finally:
        await store.close()


ATTEMPTS: dict[str, Callable[[Path], object]] = {
    "sqlite3": lambda _: sqlite3.connect(":memory:"),
    "sqlite-store": lambda path: asyncio.run(open_sqlite(path)),
    "psycopg": lambda _: psycopg.connect(URL),
    "psycopg-async": lambda _: asyncio.run(psycopg.AsyncConnection.connect(URL)),
    "postgres-store": lambda _: asyncio.run(open_postgres()),
    "subprocess": lambda _: subprocess.run(["true"], check=True),
}


@pytest.mark.parametrize("attempt", ATTEMPTS.values(), ids=ATTEMPTS.keys())
def test_a_closed_fence_stops_and_records_the_attempt(
    attempt: Callable[[Path], object], tmp_path: Path
) -> None:
    # A store may wrap the error in its own.
    with FENCE.closed("the-test") as breaches, pytest.raises(Exception) as caught:
        attempt(tmp_path)
    assert breaches and all(b.startswith("the-test ") for b in breaches), breaches
    assert caught.type is FenceError or FenceError in _chain(caught.value), caught.value


def _chain(exc: BaseException | None) -> list[type[BaseException]]:
    seen: list[type[BaseException]] = []
    while exc is not None:
        seen.append(type(exc))
        exc = exc.__cause__ or exc.__context__
    return seen


def test_a_swallowed_attempt_is_still_recorded() -> None:
    with FENCE.closed("the-test") as breaches, contextlib.suppress(FenceError):
        sqlite3.connect(":memory:")
    assert len(breaches) == 1 and "SQLite" in breaches[0]


def test_harness_threads_pass_and_an_open_fence_stops_nothing() -> None:
    results: list[object] = []
    originals = (psycopg.connect, psycopg.Connection.__dict__["connect"])

    def connect() -> None:
        with contextlib.closing(sqlite3.connect(":memory:")) as conn:
            results.append(conn.execute("SELECT 1").fetchone())

    with FENCE.closed("the-test") as breaches:
        thread = threading.Thread(target=connect, name=f"{HARNESS_THREADS}-drop_0")
        thread.start()
        thread.join()
    assert results == [(1,)] and breaches == []
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        assert conn.execute("SELECT 2").fetchone() == (2,)
    assert (psycopg.connect, psycopg.Connection.__dict__["connect"]) == originals
