"""Keel's pytest plugin: ``async def`` tests, and fixtures for testing workflows.

Installed with Keel and enabled through the ``pytest11`` entry point (named
``keel``; ``-p no:keel`` turns it off). It gives:

- ``async def`` tests run on a fresh event loop, no other plugin needed;
- ``keel_env``: a :class:`keel.testing.TestEnv` (a started in-process worker
  with the workflows your tests import, its client, and a test clock),
  ``keel_worker``, ``keel_client``, ``keel_clock`` and ``keel_store``;
- ``@pytest.mark.keel(backend=..., auto_advance=..., clock=..., **worker_options)``
  and the options ``--keel-backend`` and ``--keel-postgres-url``.

**Which async tests are Keel's.** Keel runs a coroutine test itself unless
another plugin owns it: the test carries an ``asyncio``, ``anyio`` or ``trio``
marker (put there by you or by pytest-asyncio's auto mode), or it is one of
pytest-asyncio's own test items. Those run on their owner's loop, and Keel's
fixtures start inside that loop (asyncio only).

The backend is the marker's ``backend``, else ``--keel-backend``, else
``memory``. ``sqlite`` uses a file in the test's ``tmp_path``; ``postgres``
creates a fresh database per test on the server of ``--keel-postgres-url``
(or ``$KEEL_TEST_POSTGRES_URL``) and drops it afterwards. Skipped time needs
memory or SQLite: on PostgreSQL the environment runs on real time and
``env.sleep``/``env.advance`` raise :class:`keel.ConfigurationError`.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from keel.client import Client
from keel.core.redact import redact
from keel.store.memory import MemoryStore
from keel.store.ports import Store
from keel.store.sqlite import SQLiteStore
from keel.testing.clock import TestClock
from keel.testing.env import TestEnv
from keel.worker import Worker

BACKENDS = ("memory", "sqlite", "postgres")
POSTGRES_URL_ENV = "KEEL_TEST_POSTGRES_URL"
#: Markers of the async plugins whose tests Keel leaves to them.
OTHER_OWNERS = ("asyncio", "anyio", "trio")

#: What the fixtures of one test need started and stopped inside its event loop.
_ASYNC_RESOURCES = pytest.StashKey[list[Callable[[], Any]]]()
_MARKER = (
    "keel(backend=None, auto_advance=True, clock=True, start=None, **worker_options): "
    "the store backend (memory, sqlite, postgres), auto-advance of skipped time, "
    "whether to use a test clock (and its start), and Worker options for keel_env"
)


# --- configuration --------------------------------------------------------------------------
def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    """Registered by the entry point (as ``keel``): a conftest that still lists
    this module in ``pytest_plugins`` (the way before the entry point) must not
    register it a second time, which pluggy refuses."""
    me = sys.modules[__name__]
    if pluginmanager.get_plugin(__name__) is None and pluginmanager.is_registered(me):
        pluginmanager.set_blocked(__name__)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("keel", "Keel workflow tests")
    group.addoption(
        "--keel-backend",
        choices=BACKENDS,
        default=None,
        help="store of keel_store/keel_env when the test's keel marker names none (memory)",
    )
    group.addoption(
        "--keel-postgres-url",
        default=None,
        help=f"PostgreSQL server for backend=postgres (default: ${POSTGRES_URL_ENV}); "
        "each test gets a fresh database on it",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _MARKER)


# --- running async tests ----------------------------------------------------------------------
def _owned_by_another(item: pytest.Function) -> bool:
    if any(item.get_closest_marker(name) is not None for name in OTHER_OWNERS):
        return True
    return type(item).__module__.split(".")[0] == "pytest_asyncio"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Wrap each coroutine test so that Keel's fixtures start inside the loop
    that runs it (Keel's, or another plugin's)."""
    for item in items:
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj):
            item.obj = _with_resources(item, item.obj)


def _with_resources(
    item: pytest.Function, test: Callable[..., Awaitable[Any]]
) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(test)
    async def run(*args: Any, **kwargs: Any) -> Any:
        async with AsyncExitStack() as stack:
            for resource in item.stash.get(_ASYNC_RESOURCES, []):
                await stack.enter_async_context(resource())
            return await test(*args, **kwargs)

    return run


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_ASYNC_RESOURCES] = []  # a rerun starts afresh


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run coroutine test functions to completion on a fresh event loop,
    unless another async plugin owns the test (see the module docstring)."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj) or _owned_by_another(pyfuncitem):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs: dict[str, Any] = {name: pyfuncitem.funcargs[name] for name in names}
    asyncio.run(pyfuncitem.obj(**kwargs))
    return True


def _needs_loop(request: pytest.FixtureRequest, resource: Callable[[], Any]) -> None:
    """Start ``resource`` (an async context manager factory) in the test's loop."""
    item = request.node
    if not isinstance(item, pytest.Function) or not inspect.iscoroutinefunction(item.obj):
        raise pytest.UsageError(
            f"{request.fixturename} starts a worker on the test's event loop: "
            f"make {item.name} an 'async def' test"
        )
    item.stash.setdefault(_ASYNC_RESOURCES, []).append(resource)


# --- fixtures ---------------------------------------------------------------------------------
def _marker_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    marker = request.node.get_closest_marker("keel")
    if marker is None:
        return {}
    if marker.args:
        raise pytest.UsageError("@pytest.mark.keel takes keyword arguments only")
    return dict(marker.kwargs)


@pytest.fixture
def keel_backend(request: pytest.FixtureRequest) -> str:
    """The store backend of this test: ``memory``, ``sqlite`` or ``postgres``."""
    backend = (
        _marker_options(request).get("backend")
        or request.config.getoption("--keel-backend")
        or "memory"
    )
    if backend not in BACKENDS:
        raise pytest.UsageError(f"@pytest.mark.keel(backend={backend!r}): one of {BACKENDS}")
    return str(backend)


@pytest.fixture
def keel_clock(request: pytest.FixtureRequest, keel_backend: str) -> TestClock | None:
    """The test clock of this test (``None`` on PostgreSQL, or with
    ``@pytest.mark.keel(clock=False)``: real time)."""
    options = _marker_options(request)
    if keel_backend == "postgres" or not options.get("clock", True):
        return None
    start = options.get("start")
    return TestClock() if start is None else TestClock(start)


@pytest.fixture
def keel_store(
    request: pytest.FixtureRequest, keel_backend: str, keel_clock: TestClock | None, tmp_path: Path
) -> Iterator[Store]:
    """A store of this test's backend, on its clock; opened for ``async def``
    tests (and closed after)."""
    now = keel_clock.now if keel_clock is not None else None
    if keel_backend == "memory":
        store: Store = MemoryStore(clock=now) if now is not None else MemoryStore()
        yield from _opened(request, store)
    elif keel_backend == "sqlite":
        path = tmp_path / "keel.db"
        store = SQLiteStore(path, clock=now) if now is not None else SQLiteStore(path)
        yield from _opened(request, store)
    else:
        with _postgres_database(request.config) as url:
            from keel.store.postgres import PostgresStore

            yield from _opened(request, PostgresStore(url))


def _opened(request: pytest.FixtureRequest, store: Store) -> Iterator[Store]:
    if isinstance(request.node, pytest.Function) and inspect.iscoroutinefunction(request.node.obj):

        @asynccontextmanager
        async def opened() -> AsyncIterator[None]:
            await store.open()
            try:
                yield
            finally:
                await store.close()

        _needs_loop(request, opened)
    yield store


@pytest.fixture
def keel_env(
    request: pytest.FixtureRequest,
    keel_store: Store,
    keel_clock: TestClock | None,
    keel_backend: str,
    tmp_path: Path,
) -> TestEnv:
    """A started :class:`~keel.testing.TestEnv`: in-process worker, client and
    test clock, stopped when the test ends."""
    options = _marker_options(request)
    for key in ("backend", "clock", "start"):
        options.pop(key, None)
    auto = bool(options.pop("auto_advance", True))
    factory: Callable[[], Store] | None = None
    if keel_backend == "sqlite":
        path, now = tmp_path / "keel.db", keel_clock.now if keel_clock is not None else None

        def factory() -> Store:
            return SQLiteStore(path, clock=now) if now is not None else SQLiteStore(path)

    env = TestEnv(keel_store, clock=keel_clock, auto_advance=auto, store_factory=factory, **options)

    @asynccontextmanager
    async def started() -> AsyncIterator[None]:
        async with env:
            yield

    _needs_loop(request, started)
    return env


@pytest.fixture
def keel_worker(keel_env: TestEnv) -> Worker:
    """The started worker of ``keel_env``."""
    return keel_env.worker


@pytest.fixture
def keel_client(keel_env: TestEnv) -> Client:
    """The client of ``keel_env`` (waiting for a result lets skipped time advance)."""
    return keel_env.client


# --- PostgreSQL -------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _reach(url: str) -> str | None:
    """Why the server at ``url`` cannot be used (``None``: it can)."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'keel[postgres]')"
    try:
        with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"cannot connect: {exc}".strip()
    return None


class _PostgresDatabase:
    def __init__(self, config: pytest.Config) -> None:
        url = config.getoption("--keel-postgres-url") or os.environ.get(POSTGRES_URL_ENV)
        if not url:
            pytest.fail(
                "backend 'postgres' needs a server: pass --keel-postgres-url or set "
                f"${POSTGRES_URL_ENV} (e.g. postgresql://postgres@127.0.0.1:5432/postgres)",
                pytrace=False,
            )
        problem = _reach(url)
        if problem is not None:
            pytest.fail(f"PostgreSQL at {redact(url)} is unreachable: {problem}", pytrace=False)
        self.admin_url = url
        self.name = f"keel_test_{uuid.uuid4().hex[:12]}"

    def __enter__(self) -> str:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        return _with_database(self.admin_url, self.name)

    def __exit__(self, *exc: object) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            try:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            except psycopg.errors.SyntaxError:  # before PostgreSQL 13; the store is closed
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}"')


def _with_database(url: str, name: str) -> str:
    """``url`` naming database ``name`` instead (a URL stays a URL)."""
    parts = urlsplit(url)
    if parts.scheme in ("postgres", "postgresql"):
        return urlunsplit(parts._replace(path=f"/{name}"))
    from psycopg.conninfo import make_conninfo

    return make_conninfo(url, dbname=name)


def _postgres_database(config: pytest.Config) -> _PostgresDatabase:
    """A fresh database for one test (its URL), dropped afterwards."""
    return _PostgresDatabase(config)
