"""Harness for acceptance tests: real ``keel`` processes on a real SQLite file.

Workers are ``keel worker`` subprocesses (killed with SIGKILL or stopped with
SIGTERM by the tests); step bodies in ``tests/acceptance/apps`` append one line
per execution to a log in the test's directory, which is how the tests count
executions independently of the journal. Every wait has a deadline; every
process a test starts is killed when the test ends.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

import keel
from tests.acceptance.apps._record import DIR_ENV, LOG_NAME

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
APPS = "tests.acceptance.apps"
FLOWS = f"{APPS}.flows"

_SCRIPT = Path(sys.executable).with_name("keel")
#: How to run the ``keel`` command: the installed console script if there is one.
KEEL_CMD: list[str] = (
    [str(_SCRIPT)]
    if _SCRIPT.exists()
    else [sys.executable, "-c", "import sys; from keel.cli.main import main; sys.exit(main())"]
)


@dataclass(frozen=True)
class Execution:
    """One line of the execution log."""

    run_id: str
    step: str
    attempt: int
    pid: int
    phase: str
    #: ``time.time()`` when the line was written, if the step body logged it.
    at: float | None = None


class WorkerProcess:
    """A ``keel worker`` subprocess with its output captured in files."""

    def __init__(self, popen: subprocess.Popen[bytes], name: str, out: Path, err: Path) -> None:
        self.popen = popen
        self.name = name
        self.out = out
        self.err = err

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL, and reap it."""
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def terminate(self) -> None:
        """SIGTERM (a graceful drain); use :meth:`wait` for the exit code."""
        self.popen.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout=timeout)

    def output(self) -> str:
        """Both captured streams, for failure messages."""
        text = []
        for label, path in (("stdout", self.out), ("stderr", self.err)):
            body = path.read_text(errors="replace") if path.exists() else ""
            text.append(f"--- {self.name} {label} (pid {self.pid}) ---\n{body[-4000:]}")
        return "\n".join(text)


class Harness:
    """One test's database (a SQLite file, or ``db_url``), execution log,
    processes and helpers."""

    def __init__(self, root: Path, db_url: str | None = None) -> None:
        self.root = root
        self.db_path = root / "keel.db"
        self.db_url = db_url or f"sqlite:///{self.db_path}"
        self.log_path = root / LOG_NAME
        self.workers: list[WorkerProcess] = []
        env = dict(os.environ)
        env.pop("KEEL_DATABASE_URL", None)
        pythonpath = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(REPO) + (os.pathsep + pythonpath if pythonpath else "")
        env[DIR_ENV] = str(root)
        env["PYTHONUNBUFFERED"] = "1"
        env["NO_COLOR"] = "1"
        self.env = env

    # --- processes ---------------------------------------------------------------------
    def worker(
        self,
        *modules: str,
        lease_ttl: float = 1.0,
        poll_interval: float = 0.05,
        concurrency: int | None = None,
        drain_timeout: float | None = None,
        no_cache: bool = False,
        db: str | None = None,
        queues: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        extra: tuple[str, ...] = (),
    ) -> WorkerProcess:
        """Start ``keel worker MODULE... --db ...`` in the background (serving the
        dispatched-step ``queues``, each ``NAME[=LIMIT]``, if any), with ``env``
        added to this one process's environment and ``extra`` options."""
        args = [*(modules or (FLOWS,)), "--db", db or self.db_url]
        for queue in queues:
            args += ["--queue", queue]
        args += ["--lease-ttl", str(lease_ttl), "--poll-interval", str(poll_interval)]
        if concurrency is not None:
            args += ["--concurrency", str(concurrency)]
        if drain_timeout is not None:
            args += ["--drain-timeout", str(drain_timeout)]
        if no_cache:
            args.append("--no-cache")
        args += extra
        name = f"worker{len(self.workers) + 1}"
        out, err = self.root / f"{name}.out", self.root / f"{name}.err"
        with out.open("wb") as fout, err.open("wb") as ferr:
            popen = subprocess.Popen(
                [*KEEL_CMD, "worker", *args],
                cwd=REPO,
                env={**self.env, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=fout,
                stderr=ferr,
            )
        proc = WorkerProcess(popen, name, out, err)
        self.workers.append(proc)
        return proc

    def cli(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run one ``keel`` command to completion (the caller adds ``--db``)."""
        return subprocess.run(
            [*KEEL_CMD, *args],
            cwd=REPO,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def cli_ok(self, *args: str, timeout: float = 30.0) -> str:
        """Run a ``keel`` command that must succeed; return its stdout."""
        proc = self.cli(*args, timeout=timeout)
        assert proc.returncode == 0, (
            f"keel {' '.join(args)} exited {proc.returncode}\n"
            f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
        return proc.stdout

    def worker_output(self) -> str:
        return "\n".join(w.output() for w in self.workers)

    def cleanup(self) -> None:
        for proc in self.workers:
            if proc.alive():
                proc.kill()

    # --- evidence from outside the engine -----------------------------------------------
    def executions(self) -> list[Execution]:
        if not self.log_path.exists():
            return []
        rows = []
        for line in self.log_path.read_text().splitlines():
            run_id, step, attempt, pid, phase, *at = line.split()
            stamp = float(at[0]) if at else None
            rows.append(Execution(run_id, step, int(attempt), int(pid), phase, stamp))
        return rows

    def started(self) -> Counter[tuple[str, str]]:
        """How many times each (run id, step) body started."""
        return Counter((e.run_id, e.step) for e in self.executions() if e.phase == "start")

    def open_gate(self, name: str) -> None:
        (self.root / f"gate-{name}").touch()

    # --- the store ------------------------------------------------------------------------
    def client(self) -> keel.Client:
        return keel.Client(self.db_url)

    async def sql(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Run one statement (autocommit) on a PostgreSQL ``db_url``, on a new
        connection, and return its rows: to look at or tamper with rows directly."""
        import psycopg  # only the PostgreSQL tests come here

        async with await psycopg.AsyncConnection.connect(self.db_url, autocommit=True) as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchall() if cur.description else []

    async def wait_for(
        self,
        probe: Callable[[], Awaitable[T | None] | T | None],
        what: str,
        timeout: float = 20.0,
        alive: tuple[WorkerProcess, ...] = (),
        interval: float = 0.05,
    ) -> T:
        """Poll ``probe`` until it returns something truthy; fail after ``timeout``.

        Fails at once if one of the ``alive`` workers exits meanwhile.
        """
        deadline = time.monotonic() + timeout
        while True:
            value = probe()
            if asyncio.iscoroutine(value) or isinstance(value, Awaitable):
                value = await value
            if value:
                return value
            for proc in alive:
                if not proc.alive():
                    pytest.fail(
                        f"{proc.name} exited ({proc.popen.returncode}) while waiting for "
                        f"{what}\n{self.worker_output()}"
                    )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"timed out after {timeout}s waiting for {what}\n{self.worker_output()}"
                )
            await asyncio.sleep(interval)

    async def wait_finished(
        self,
        client: keel.Client,
        run_ids: list[str],
        timeout: float = 30.0,
        alive: tuple[WorkerProcess, ...] = (),
    ) -> dict[str, keel.RunInfo]:
        """Wait until every run is in a terminal state; return their infos."""
        infos: dict[str, keel.RunInfo] = {}

        async def probe() -> bool:
            for run_id in run_ids:
                if run_id not in infos:
                    info = await client.get(run_id)
                    if not info.state.is_terminal:
                        return False
                    infos[run_id] = info
            return True

        await self.wait_for(probe, f"{len(run_ids)} run(s) to finish", timeout, alive)
        return infos


def step_completions(history: list[keel.HistoryEvent]) -> Counter[str]:
    """How many ``step_completed`` events each step name has in a journal."""
    return Counter(e.name or "" for e in history if e.type == "step_completed")


def error_line(stderr: str) -> str:
    """The single ``error: ...`` line a failing command must print, checked."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert lines[0].startswith("error: "), f"expected 'error: ...', got: {lines[0]!r}"
    assert "Traceback" not in stderr
    return lines[0]
