"""No output of any ``keel`` command shows the password of a database URL.

Every command runs in a real subprocess with a ``postgresql://`` URL that
carries a password (the test server trusts every connection, so it is not
checked, but Keel must still never print or log it): worker logs, reads,
migrations, and errors on unusable URLs, including one libpq quotes back.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

import keel
from keel.store.postgres import PostgresStore
from tests import pg
from tests.acceptance.harness import FLOWS, Harness, WorkerProcess

pytestmark = pytest.mark.acceptance

SECRET = "s3cretPW9x"


def with_password(url: str, password: str = SECRET) -> str:
    """``url`` with ``password`` in its user info."""
    parts = urlsplit(url)
    user = parts.username or "postgres"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    pg.require_postgres()
    h = Harness(tmp_path, db_url=with_password(pg.empty_database_url()))
    try:
        yield h
    finally:
        h.cleanup()


def assert_hidden(what: str, proc: subprocess.CompletedProcess[str], code: int) -> str:
    output = proc.stdout + proc.stderr
    assert SECRET not in output, f"{what} showed the password:\n{output}"
    assert proc.returncode == code, f"{what} exited {proc.returncode}:\n{output}"
    return output


#: The URL ``leaky`` fails to reach (not its input: inputs are the user's data).
LEAKY_URL: list[str] = []


@keel.workflow(name="secrets.leaky")
async def leaky() -> None:
    raise ConnectionError(f"could not reach {LEAKY_URL[0]}")


@pytest.mark.timeout(120)  # about twenty processes, one after another
async def test_no_command_shows_the_database_password(harness: Harness) -> None:
    url = harness.db_url
    db = ("--db", url)
    assert_hidden("db migrate --print", harness.cli("db", "migrate", "--print", *db), 0)
    assert_hidden("runs list on an empty database", harness.cli("runs", "list", *db), 1)
    assert_hidden("db migrate", harness.cli("db", "migrate", *db), 0)
    # A run whose error names the URL, made by a worker in this process (the
    # only one that knows the workflow) before the other worker starts.
    async with keel.Worker(PostgresStore(url), poll_interval=0.05) as local:
        LEAKY_URL[:] = [url]
        await local.client().start(leaky, run_id="leaky")
        async with harness.client() as client:
            await harness.wait_finished(client, ["leaky"])

    started = assert_hidden(
        "start", harness.cli("start", "acc.typed", "3", "--app", FLOWS, "--run-id", "ok", *db), 0
    )
    assert "ok" in started
    w = harness.worker(db=url)
    wj = harness.worker(db=url, extra=("--log-format", "json"))  # JSON lines mask it too
    async with harness.client() as client:
        await harness.wait_finished(client, ["ok"], alive=(w, wj))

    def ready(proc: WorkerProcess) -> bool:
        return " started: " in proc.err.read_text(errors="replace")

    for proc in (w, wj):
        await harness.wait_for(lambda p=proc: ready(p), "the worker's start line", alive=(proc,))
    health = assert_hidden("health while workers run", harness.cli("health", "--json", *db), 0)
    assert '"ready": true' in health
    for proc in (w, wj):
        proc.terminate()
        assert proc.wait(timeout=30) == 0, proc.output()
        log = proc.out.read_text() + proc.err.read_text()
        assert " started: db=postgresql://" in log and SECRET not in log, log
    assert wj.err.read_text().startswith("{")

    for args in (
        ("runs", "list"),
        ("runs", "list", "--json"),
        ("runs", "show", "ok"),
        ("runs", "show", "leaky"),
        ("runs", "show", "leaky", "--json"),
        ("runs", "history", "leaky"),
    ):
        assert_hidden(" ".join(args), harness.cli(*args, *db), 0)
    assert_hidden("runs show of an unknown run", harness.cli("runs", "show", "ghost", *db), 1)
    assert_hidden("demo", harness.cli("demo", "--fast", *db), 0)

    server = urlsplit(url)
    unusable = {
        "a database that does not exist": url.rpartition("/")[0] + "/keel_no_such_database",
        "a port nobody listens on": urlunsplit(
            server._replace(netloc=f"postgres:{SECRET}@127.0.0.1:1")
        ),
        "a URL libpq cannot parse (it quotes it back)": f"postgresql://postgres:{SECRET}@[::1/x",
        "an unsupported scheme": f"mysql://postgres:{SECRET}@127.0.0.1/x",
    }
    bad_workers = {what: harness.worker(db=bad) for what, bad in unusable.items()}  # at once
    for what, bad in unusable.items():
        proc = harness.cli("runs", "list", "--db", bad)
        line = assert_hidden(f"runs list on {what}", proc, 1)
        assert line.startswith("error: "), line
        report = assert_hidden(f"health on {what}", harness.cli("health", "--db", bad), 1)
        assert report.startswith("store  FAIL"), report
    for what, bad_worker in bad_workers.items():
        code = bad_worker.wait(timeout=30)
        log = bad_worker.out.read_text() + bad_worker.err.read_text()
        assert code == 1 and SECRET not in log, f"worker on {what}:\n{log}"
