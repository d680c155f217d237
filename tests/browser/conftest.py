"""The dashboard in a real headless browser: Playwright's sync API driving
Debian's ``chromium`` against ``keel.ui`` served by uvicorn (in a thread, on a
free port) over a real SQLite file or PostgreSQL database, with a real
``keel worker`` subprocess running ``tests.browser.apps``.

Screenshots of each page land in ``$KEEL_SCREENSHOTS`` (default: a
``screenshots`` directory in pytest's base temporary directory).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvicorn
from playwright.sync_api import Browser, Page, sync_playwright

import keel
from keel.ui import create_app
from tests import pg

CHROMIUM = "/usr/bin/chromium"
TOKEN = "op-token-for-tests"
REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Module scope, not session: while Playwright's sync API is open, this
    # thread has a running event loop, and the suite's later asyncio.run() calls
    # would fail.
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing (.ci/run installs Debian's chromium)")
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="session")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = os.environ.get("KEEL_SCREENSHOTS")
    path = Path(where) if where else tmp_path_factory.getbasetemp() / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


def call(fn: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine on a loop of its own thread (Playwright's sync API owns this one)."""
    out: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            out.append(asyncio.run(fn()))  # type: ignore[arg-type]
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join(60)
    if errors:
        raise errors[0]
    return out[0]


@dataclass
class Dashboard:
    """A served dashboard, its database and worker."""

    url: str  # the database
    base: str  # http://127.0.0.1:PORT
    server: uvicorn.Server
    thread: threading.Thread
    worker: subprocess.Popen[bytes] | None = None
    started: list[str] = field(default_factory=list)

    def client(self) -> keel.Client:
        return keel.Client(self.url)

    def start(self, wf: Any, *args: Any, **kwargs: Any) -> str:
        async def go() -> str:
            async with self.client() as c:
                return (await c.start(wf, *args, **kwargs)).run_id

        run_id = call(go)
        self.started.append(run_id)
        return run_id

    def signal(self, run_id: str, name: str, payload: Any) -> None:
        async def go() -> None:
            async with self.client() as c:
                await c.signal(run_id, name, payload)

        call(go)

    def wait_state(self, run_id: str, *states: str, timeout: float = 30) -> str:
        """Wait (deadline ``timeout``) until the run is in one of ``states``."""

        async def go() -> str:
            async with self.client() as c:
                deadline = time.monotonic() + timeout
                while True:
                    state = (await c.get(run_id)).state.value
                    if state in states or time.monotonic() > deadline:
                        return state
                    await c.store.changes.wait(0.2)

        state = call(go)
        assert state in states, f"run {run_id} is {state}, not {states}"
        return state

    def login(self, page: Page) -> None:
        page.goto(self.base + "/login")
        page.fill("input[name=token]", TOKEN)
        page.click("button:has-text('Log in')")
        page.wait_for_selector(".badge.operator")


def _serve(app: Any) -> tuple[uvicorn.Server, threading.Thread, str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "the dashboard did not start"
        time.sleep(0.02)
    return server, thread, f"http://127.0.0.1:{port}"


def _worker(url: str, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    keel_cli = shutil.which("keel", path=str(Path(sys.executable).parent)) or "keel"
    cmd = [keel_cli, "worker", "--db", url, "--poll-interval", "0.1", "tests.browser.apps"]
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture(params=["sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "postgres":
        pg.require_postgres()
        url = pg.fresh_database_url()
        yield url
        pg.drop_database_later(url)
    else:
        path = tmp_path / "keel.db"

        async def create() -> None:  # the schema, before the worker and the app open it
            async with keel.Client(str(path)):
                pass

        call(create)
        yield str(path)


def _serving(database: str, tmp_path: Path, token: str | None) -> Iterator[Dashboard]:
    worker = _worker(database, tmp_path / "worker.log")
    server, thread, base = _serve(create_app(database, token=token))
    d = Dashboard(database, base, server, thread, worker)
    try:
        yield d
    finally:
        server.should_exit = True
        thread.join(10)
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


@pytest.fixture
def dashboard(database: str, tmp_path: Path) -> Iterator[Dashboard]:
    """The dashboard with an operator token, a worker, a fresh database."""
    yield from _serving(database, tmp_path, TOKEN)


@pytest.fixture
def readonly(database: str, tmp_path: Path) -> Iterator[Dashboard]:
    """The dashboard started without an operator token."""
    yield from _serving(database, tmp_path, None)


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    p = context.new_page()
    p.set_default_timeout(20_000)
    yield p
    context.close()
