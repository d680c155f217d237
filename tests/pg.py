"""A real PostgreSQL for tests: one migrated template database, cloned per test.

The server comes from ``KEEL_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``). If it is unreachable the
PostgreSQL tests skip with a loud reason, except under ``CI=true``, where they
fail: CI must not pass without having run them.

A session creates ``keel_<pid>_<random>_tpl`` once, migrated by opening a
:class:`PostgresStore` on it, and clones it for each test (``CREATE DATABASE
... TEMPLATE``: no migrations per test). Two spares are cloned ahead of need
in the background. A used database is dropped in the background as soon as
its test ends, on several threads: each ``DROP DATABASE`` waits for a
checkpoint, and concurrent drops share one. At most MAX_PENDING_DROPS wait
(a test's teardown waits when more would), so a session's end has little left
to drop, and drops that in parallel too. Every statement the harness
sends waits out a server restart (see :func:`retrying`). Use the fixtures
(list this module in ``pytest_plugins``, or import them into a test module)
or the plain functions::

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
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from keel.store.postgres import PostgresStore

T = TypeVar("T")

URL_ENV = "KEEL_TEST_POSTGRES_URL"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SPARES = 2  # databases cloned ahead of need
DROP_THREADS = 8  # concurrent DROP DATABASEs (they share checkpoints)
# Used databases waiting to be dropped, at most: when drops fall behind the
# tests (a loaded server), a test's teardown waits, so the session's end stays short.
MAX_PENDING_DROPS = 2 * DROP_THREADS
RESTART_DEADLINE = 60.0  # seconds every harness statement waits for a restarting server
PROBE_REFUSED_GRACE = 3.0  # seconds the first probe retries a refused connection
# tests/fence.py lets threads named so connect while a unit test runs.
THREAD_PREFIX = "keel-test-db"


def server_url() -> str:
    """URL of the test server's maintenance database (never written to)."""
    return os.environ.get(URL_ENV) or DEFAULT_URL


def database_url(name: str) -> str:
    """The server URL with its database replaced by ``name``."""
    return urlunsplit(urlsplit(server_url())._replace(path=f"/{name}"))


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


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
    refused: bool | float = True,
    pause: Callable[[float], object] = time.sleep,
) -> T:
    """``fn()``, called again while the server restarts, for up to ``deadline`` seconds.

    ``refused``: for how long a refused connection counts as a restart —
    ``True`` the whole deadline, ``False`` not at all, a number of seconds
    for a short grace (the first probe: no server at all must skip soon).
    """
    start = time.monotonic()
    end = start + deadline
    refused_end = end if refused is True else start + float(refused)
    delay = 0.05
    while True:
        try:
            return fn()
        except Exception as exc:
            now = time.monotonic()
            if not is_restart(exc, refused=now < refused_end) or now >= end:
                raise
        pause(delay)
        delay = min(delay * 2, 1.0)


def _migrate(url: str) -> None:
    """Open (and so migrate) and close a store on ``url``, on a private event loop
    in a thread: the caller may be running inside an event loop already."""

    async def migrate() -> None:
        store = PostgresStore(url, min_size=1, max_size=1)
        await store.open()
        await store.close()

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=THREAD_PREFIX) as pool:
        pool.submit(lambda: asyncio.run(migrate())).result()


def _in_parallel(fn: Callable[[str], None], items: list[str]) -> None:
    """``fn(item)`` for every item on up to DROP_THREADS threads; re-raises the first error.

    Plain threads: this also runs from :mod:`atexit`, where ``concurrent.futures``
    refuses new work."""
    todo = list(items)
    lock = threading.Lock()
    errors: list[Exception] = []

    def work() -> None:
        while True:
            with lock:
                if not todo:
                    return
                item = todo.pop()
            try:
                fn(item)
            except Exception as exc:
                errors.append(exc)

    threads = [
        threading.Thread(target=work, name=f"{THREAD_PREFIX}-drop-all-{i}")
        for i in range(min(DROP_THREADS, len(todo)))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


class Session:
    """The databases one test session made on the server, and how it makes and drops them.

    ``connect``, ``migrate`` and ``pause`` are seams for the harness's own
    tests (a connect that fails like a restarting server, a pause that does
    not sleep); the session's single instance uses the real ones.
    """

    def __init__(
        self,
        *,
        connect: Callable[..., psycopg.Connection[Any]] = psycopg.connect,
        migrate: Callable[[str], None] = _migrate,
        pause: Callable[[float], object] = time.sleep,
    ) -> None:
        self.connect = connect
        self.migrate = migrate
        self.pause = pause
        self.lock = threading.Lock()
        self.probed = False
        self.unavailable: str | None = None
        self.prefix = f"keel_{os.getpid()}_{secrets.token_hex(2)}"
        self.template: str | None = None
        self.counter = itertools.count(1)
        self.created: set[str] = set()  # every database not yet dropped
        self.spares: collections.deque[concurrent.futures.Future[str]] = collections.deque()
        self.cloner: concurrent.futures.ThreadPoolExecutor | None = None
        self.dropper: concurrent.futures.ThreadPoolExecutor | None = None
        self.pending_drops = threading.BoundedSemaphore(MAX_PENDING_DROPS)
        self.at_exit = False

    # -- statements, each waiting out a restart ------------------------------------

    def retrying(self, fn: Callable[[], T], *, refused: bool | float = True) -> T:
        return retrying(fn, refused=refused, pause=self.pause)

    def execute(self, statement: sql.SQL | sql.Composed, *, refused: bool | float = True) -> None:
        """Run one idempotent statement on the maintenance database."""

        def once() -> None:
            with self.connect(server_url(), autocommit=True, connect_timeout=5) as conn:
                conn.execute(statement)

        self.retrying(once, refused=refused)

    def create_database(self, name: str, template: str | None = None) -> None:
        """``CREATE DATABASE name [TEMPLATE template]``.

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
                with self.connect(server_url(), autocommit=True, connect_timeout=5) as conn:
                    conn.execute(statement)
            except psycopg.errors.DuplicateDatabase:
                if attempts == 1:
                    raise

        self.retrying(once)

    # -- the server --------------------------------------------------------------------

    def unavailable_reason(self) -> str | None:
        """Why the test server cannot be used, or ``None`` when it can (probed once)."""
        with self.lock:
            if not self.probed:
                self.probed = True
                try:
                    self.execute(sql.SQL("SELECT 1"), refused=PROBE_REFUSED_GRACE)
                except psycopg.Error as exc:
                    self.unavailable = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            return self.unavailable

    # -- databases ---------------------------------------------------------------------

    def template_name(self) -> str:
        """The session's migrated template database, made on first use."""
        with self.lock:
            if self.template is None:
                name = self._new_name_locked("tpl")
                self.created.discard(name)  # dropped last, by drop_all, as the template
                self.create_database(name)
                self.template = name
                self.retrying(lambda: self.migrate(database_url(name)))
                # A template cannot be cloned while anyone is connected to it: allow nobody.
                alter = "ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"
                self.execute(sql.SQL(alter).format(sql.Identifier(name)))
                self.cloner = concurrent.futures.ThreadPoolExecutor(
                    SPARES, thread_name_prefix=f"{THREAD_PREFIX}-clone"
                )
            return self.template

    def _new_name_locked(self, suffix: str | None = None) -> str:
        name = f"{self.prefix}_{suffix or next(self.counter)}"
        self.created.add(name)
        if not self.at_exit:  # whatever a session leaves, the interpreter's exit drops
            self.at_exit = True
            atexit.register(self.drop_all)
        return name

    def _clone(self, template: str) -> str:
        with self.lock:
            name = self._new_name_locked()
        self.create_database(name, template)
        return name

    def fresh_database_url(self) -> str:
        """URL of a new database with Keel's schema in place (dropped at session end)."""
        template = self.template_name()
        with self.lock:
            cloner = self.cloner
            assert cloner is not None, "the session has ended"
            while len(self.spares) <= SPARES:
                self.spares.append(cloner.submit(self._clone, template))
            spare = self.spares.popleft()
        return database_url(spare.result())

    def empty_database_url(self) -> str:
        """URL of a new, empty database (no Keel schema), dropped at session end."""
        with self.lock:
            name = self._new_name_locked()
        self.create_database(name)
        return database_url(name)

    def drop_database(self, url: str) -> None:
        """Drop a database this session made, even if connections to it remain."""
        name = database_name(url)
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        self.execute(drop.format(sql.Identifier(name)))
        with self.lock:
            self.created.discard(name)

    def drop_database_later(self, url: str) -> None:
        """:meth:`drop_database` in the background (or now, if the session is ending),
        after waiting while MAX_PENDING_DROPS drops are pending.

        A background drop that fails leaves the name in ``created``: drop_all retries it.
        """

        def drop() -> None:
            try:
                self.drop_database(url)
            finally:
                self.pending_drops.release()

        with self.lock:
            if self.dropper is None:
                self.dropper = concurrent.futures.ThreadPoolExecutor(
                    DROP_THREADS, thread_name_prefix=f"{THREAD_PREFIX}-drop"
                )
            dropper = self.dropper
        self.pending_drops.acquire()
        try:
            dropper.submit(drop)
        except RuntimeError:  # drop_all is shutting it down, or the interpreter is exiting
            drop()

    def drop_all(self) -> None:
        """Drop every database this session made, spares included, template last. Idempotent."""
        with self.lock:
            cloner, self.cloner = self.cloner, None
            dropper, self.dropper = self.dropper, None
            spares = list(self.spares)
            self.spares.clear()
        if cloner is not None:
            for spare in spares:
                spare.cancel()
            cloner.shutdown(wait=True)
        if dropper is not None:
            dropper.shutdown(wait=True)  # the drops under way finish
        if not (self.created or self.template) or self.unavailable_reason() is not None:
            return
        with self.lock:
            urls = [database_url(name) for name in sorted(self.created)]
        _in_parallel(self.drop_database, urls)
        with self.lock:
            template, self.template = self.template, None
        if template is not None:
            ident = sql.Identifier(template)
            self.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(ident))
            self.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))


_state = Session()


def unavailable_reason() -> str | None:
    """Why the test server cannot be used, or ``None`` when it can (probed once)."""
    return _state.unavailable_reason()


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


def template_name() -> str:
    """The session's migrated template database, made on first use."""
    return _state.template_name()


def fresh_database_url() -> str:
    """URL of a new database with Keel's schema in place (dropped at session end)."""
    return _state.fresh_database_url()


def empty_database_url() -> str:
    """URL of a new, empty database (no Keel schema), dropped at session end."""
    return _state.empty_database_url()


def drop_database(url: str) -> None:
    """Drop a database this session made, even if connections to it remain."""
    _state.drop_database(url)


def drop_database_later(url: str) -> None:
    """:func:`drop_database` in the background (or now, if the session is ending)."""
    _state.drop_database_later(url)


def drop_all() -> None:
    """Drop every database this session made, spares included, template last. Idempotent."""
    _state.drop_all()


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
