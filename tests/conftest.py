"""Shared fixtures: stores of every backend, in-process workers and clients."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

import keel
from keel.store.memory import MemoryStore
from keel.store.postgres import PostgresStore
from keel.store.sqlite import SQLiteStore
from tests import pg

# keel.testing.pytest_plugin (async tests, keel_* fixtures) is active through its
# pytest11 entry point, as in users' suites; pytester runs it in inner sessions.
pytest_plugins = ["pytester"]

BACKENDS = ["memory", "sqlite", "postgres"]

# pytest-xdist (`make test` runs the suite on several worker processes): the
# controller imports pdb, so readline, which exports LINES and COLUMNS (80x24)
# into the C environment that the workers inherit, though not into the
# controller's os.environ. The CLI's tables then wrap at 80 columns in the
# workers only (`keel` pins 200 columns when stdout is no terminal and COLUMNS
# is unset). Each worker gets the controller's os.environ view of them back.
_TERMINAL_ENV = ("COLUMNS", "LINES")
_WORKER_TERMINAL_ENV = "keel_terminal_env"


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """(xdist controller) Tell each worker what the terminal variables really are."""
    node.workerinput[_WORKER_TERMINAL_ENV] = {k: os.environ.get(k) for k in _TERMINAL_ENV}


def pytest_configure(config: pytest.Config) -> None:
    wanted = getattr(config, "workerinput", {}).get(_WORKER_TERMINAL_ENV)
    for name, value in (wanted or {}).items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres":
        pg.require_postgres()  # skips loudly, or fails under CI=true
    return str(request.param)


@pytest.fixture
def make_store(backend: str, tmp_path: Path) -> Iterator[Callable[[], Any]]:
    """A factory of fresh (unopened) stores of the parametrised backend.

    Every store made by one test shares one database (the memory store
    object, the SQLite file, the PostgreSQL database), so several stores act
    like several processes on one database. The PostgreSQL database is
    dropped (in the background) when the test ends.
    """
    shared_memory: list[MemoryStore] = []
    pg_url: list[str] = []

    def make() -> Any:
        if backend == "memory":
            if not shared_memory:
                shared_memory.append(MemoryStore())
            return shared_memory[0]
        if backend == "postgres":
            if not pg_url:
                pg_url.append(pg.fresh_database_url())
            return PostgresStore(pg_url[0])
        return SQLiteStore(tmp_path / "keel.db")

    yield make
    for url in pg_url:
        pg.drop_database_later(url)


@pytest.fixture
def env(make_store: Callable[[], Any]) -> Callable[..., Any]:
    """``async with env(**worker_options) as (client, worker):`` — a worker with
    caching OFF (every turn replays from the store) unless ``cache=True`` is given."""

    @asynccontextmanager
    async def run(**options: Any) -> AsyncIterator[tuple[keel.Client, keel.Worker]]:
        options.setdefault("cache", False)
        options.setdefault("poll_interval", 0.05)
        options.setdefault("lease_ttl", 5.0)
        worker = keel.Worker(make_store(), **options)
        async with worker:
            yield worker.client(), worker

    return run
