"""A real PostgreSQL for tests: one migrated template database, cloned per test.

The server comes from ``KEEL_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``). If it is unreachable the
PostgreSQL tests skip with a loud reason, except under ``CI=true``, where they
fail: CI must not pass without having run them.

A session creates ``keel_<pid>_<random>_tpl`` once, migrated by opening a
:class:`PostgresStore` on it, and clones it for each test (``CREATE DATABASE
... TEMPLATE``: no migrations per test). A clone costs a few hundred
milliseconds of fsync, so two spares are cloned (and used ones dropped) in
the background while tests run. Everything the session created is dropped at its end.
Setup and teardown wait out a server restart (see :func:`retrying`). Use the
fixtures (list this module in ``pytest_plugins``, or import them into a test
module) or the plain functions::

    def test_x(pg_url): ...            # a fresh database, dropped afterwards
    url = fresh_database_url()         # the same; dropped at session end
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import concurrent.futures
import itertools
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from keel.store.postgres import PostgresStore

T = TypeVar("T")

URL_ENV = "KEEL_TEST_POSTGRES_URL"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SPARES = 2  # databases cloned ahead of need
RESTART_DEADLINE = 60.0  # seconds setup and teardown wait for a restarting server


def server_url() -> str:
    """URL of the test server's maintenance database (never written to)."""
    return os.environ.get(URL_ENV) or DEFAULT_URL


def database_url(name: str) -> str:
    """The server URL with its database replaced by ``name``."""
    return urlunsplit(urlsplit(server_url())._replace(path=f"/{name}"))


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.probed = False
        self.unavailable: str | None = None
        self.prefix = f"keel_{os.getpid()}_{secrets.token_hex(2)}"
        self.template: str | None = None
        self.counter = itertools.count(1)
        self.created: set[str] = set()  # every database to drop at session end
        self.spares: collections.deque[concurrent.futures.Future[str]] = collections.deque()
        self.executor: concurrent.futures.ThreadPoolExecutor | None = None


_state = _State()


# What a server restart looks like: the server refuses connections while it
# stops and starts (57P03), ends sessions (57P01/57P02), or is not listening.
_RESTART_STATES = frozenset({"57P01", "57P02", "57P03"})
_RESTART_TEXTS = (
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "terminating connection due to administrator command",
    "server closed the connection unexpectedly",
)
_REFUSED_TEXT = "connection refused"


def is_restart(exc: BaseException | None, *, refused: bool = True) -> bool:
    """Whether ``exc``, or an error it wraps, says the server is restarting."""
    while exc is not None:
        if isinstance(exc, psycopg.OperationalError):
            text = str(exc).lower()
            if getattr(exc, "sqlstate", None) in _RESTART_STATES:
                return True
            if any(t in text for t in _RESTART_TEXTS) or (refused and _REFUSED_TEXT in text):
                return True
        exc = exc.__cause__
    return False


def retrying(
    fn: Callable[[], T],
    *,
    deadline: float = RESTART_DEADLINE,
    refused: bool = True,
    pause: Callable[[float], object] = time.sleep,
) -> T:
    """``fn()``, called again while the server restarts, for up to ``deadline`` seconds.

    ``refused=False``: a refused connection is final (the first probe: no
    server at all must skip at once, not after a deadline).
    """
    end = time.monotonic() + deadline
    delay = 0.05
    while True:
        try:
            return fn()
        except Exception as exc:
            if not is_restart(exc, refused=refused) or time.monotonic() >= end:
                raise
        pause(delay)
        delay = min(delay * 2, 1.0)


def _execute(statement: sql.SQL | sql.Composed, *, refused: bool = True) -> None:
    """Run one idempotent statement on the maintenance database, waiting out a restart."""

    def once() -> None:
        with psycopg.connect(server_url(), autocommit=True, connect_timeout=5) as conn:
            conn.execute(statement)

    retrying(once, refused=refused)


def _create_database(name: str, template: str | None = None) -> None:
    """``CREATE DATABASE name [TEMPLATE template]``, waiting out a restart.

    A retry that finds the database made counts as done: the attempt the
    restart cut short had committed it (names are unique to this session).
    """
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    attempts = 0

    def once() -> None:
        nonlocal attempts
        attempts += 1
        try:
            with psycopg.connect(server_url(), autocommit=True, connect_timeout=5) as conn:
                conn.execute(statement)
        except psycopg.errors.DuplicateDatabase:
            if attempts == 1:
                raise

    retrying(once)


def unavailable_reason() -> str | None:
    """Why the test server cannot be used, or ``None`` when it can (probed once)."""
    with _state.lock:
        if not _state.probed:
            _state.probed = True
            try:
                _execute(sql.SQL("SELECT 1"), refused=False)
            except psycopg.Error as exc:
                _state.unavailable = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        return _state.unavailable


def pg_available() -> bool:
    return unavailable_reason() is None


def require_postgres() -> None:
    """Skip (under ``CI=true``: fail) the calling test if the server is unreachable."""
    reason = unavailable_reason()
    if reason is None:
        return
    msg = (
        f"PostgreSQL UNAVAILABLE at {server_url()} ({reason}). Start it "
        "(pg_ctlcluster --skip-systemctl-redirect 15 main start) or point "
        f"{URL_ENV} at a server."
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {msg}", pytrace=False)
    pytest.skip(f"SKIPPING PostgreSQL tests: {msg}")


def _migrate(url: str) -> None:
    """Open (and so migrate) and close a store on ``url``, on a private event loop
    in a thread: the caller may be running inside an event loop already."""

    async def migrate() -> None:
        store = PostgresStore(url, min_size=1, max_size=1)
        await store.open()
        await store.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        retrying(lambda: pool.submit(lambda: asyncio.run(migrate())).result())


def template_name() -> str:
    """The session's migrated template database, made on first use."""
    with _state.lock:
        if _state.template is None:
            name = f"{_state.prefix}_tpl"
            _create_database(name)
            _state.template = name
            atexit.register(drop_all)
            _migrate(database_url(name))
            # A template cannot be cloned while anyone is connected to it: allow nobody.
            _execute(
                sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false").format(
                    sql.Identifier(name)
                )
            )
            _state.executor = concurrent.futures.ThreadPoolExecutor(
                SPARES, thread_name_prefix="keel-test-db"
            )
        return _state.template


def _new_name() -> str:
    with _state.lock:
        name = f"{_state.prefix}_{next(_state.counter)}"
        _state.created.add(name)
    return name


def _clone(template: str) -> str:
    name = _new_name()
    _create_database(name, template)
    return name


def fresh_database_url() -> str:
    """URL of a new database with Keel's schema in place (dropped at session end)."""
    template = template_name()
    with _state.lock:
        executor = _state.executor
        assert executor is not None
        while len(_state.spares) <= SPARES:
            _state.spares.append(executor.submit(_clone, template))
        spare = _state.spares.popleft()
    return database_url(spare.result())


def empty_database_url() -> str:
    """URL of a new, empty database (no Keel schema), dropped at session end."""
    name = _new_name()
    _create_database(name)
    return database_url(name)


def drop_database(url: str) -> None:
    """Drop a database this module made, even if connections to it remain."""
    name = database_name(url)
    _execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    with _state.lock:
        _state.created.discard(name)


def drop_database_later(url: str) -> None:
    """:func:`drop_database` in the background (or now, if the session is ending)."""
    with _state.lock:
        executor = _state.executor
    try:
        if executor is not None:
            executor.submit(drop_database, url)
            return
    except RuntimeError:  # the executor is shutting down
        pass
    drop_database(url)


def drop_all() -> None:
    """Drop every database this session made, spares included, template last. Idempotent."""
    with _state.lock:
        executor, _state.executor = _state.executor, None
        spares = list(_state.spares)
        _state.spares.clear()
    if executor is not None:
        for spare in spares:
            spare.cancel()
        executor.shutdown(wait=True)
    if not pg_available():
        return
    for name in sorted(_state.created):
        drop_database(database_url(name))
    with _state.lock:
        template, _state.template = _state.template, None
    if template is not None:
        ident = sql.Identifier(template)
        _execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(ident))
        _execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The test server's URL; skips (or fails) if it is unreachable; cleans up at the end."""
    require_postgres()
    yield server_url()
    drop_all()


@pytest.fixture
def pg_url(postgres_server: str) -> Iterator[str]:
    """URL of a fresh, migrated database for this test alone (dropped afterwards)."""
    url = fresh_database_url()
    yield url
    drop_database_later(url)
