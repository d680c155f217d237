"""Bad input to the ``keel`` command: one clear line on stderr, exit code 1,
no traceback, and nothing written."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.harness import FLOWS, Harness, error_line

pytestmark = pytest.mark.acceptance


def failure(harness: Harness, *args: str) -> str:
    """Run a command that must fail cleanly; return its error line."""
    proc = harness.cli(*args)
    assert proc.returncode == 1, (
        f"keel {' '.join(args)} exited {proc.returncode}\n"
        f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
    )
    return error_line(proc.stderr)


def runs_json(harness: Harness) -> list[dict[str, Any]]:
    doc = json.loads(harness.cli_ok("runs", "list", "--db", harness.db_url, "--json"))
    runs: list[dict[str, Any]] = doc["runs"]
    return runs


async def test_bad_starts_write_nothing(harness: Harness) -> None:
    db = ("--db", harness.db_url)
    app = ("--app", FLOWS)
    failure(harness, "start", "acc.typed", '"not-a-number"', *app, *db)
    assert not harness.db_path.exists(), "a refused start created the database file"
    async with harness.client():
        pass  # an empty Keel database

    line = failure(harness, "start", "acc.no_such_flow", *app, *db)
    assert "acc.no_such_flow" in line and "acc.typed" in line  # names the known ones

    line = failure(harness, "start", "acc.typed", '"not-a-number"', *app, "--run-id", "b1", *db)
    assert "'n'" in line and "acc.typed" in line, line  # names the argument and workflow
    line = failure(harness, "start", "acc.typed", "1", "2", *app, "--run-id", "b2", *db)
    assert "acc.typed" in line, line
    line = failure(harness, "start", "acc.typed", *app, "--run-id", "b3", *db)
    assert "'n'" in line, line

    assert runs_json(harness) == []
    failure(harness, "runs", "show", "b1", *db)


async def test_unknown_and_finished_runs(harness: Harness) -> None:
    db = ("--db", harness.db_url)
    async with harness.client():
        pass
    for args in (
        ("runs", "show", "ghost"),
        ("runs", "history", "ghost"),
        ("signal", "ghost", "approve", '{"ok": true}'),
        ("cancel", "ghost"),
    ):
        line = failure(harness, *args, *db)
        assert "'ghost'" in line, line

    harness.cli_ok("start", "acc.typed", "7", "--app", FLOWS, "--run-id", "done-1", *db)
    async with harness.client() as client:
        w = harness.worker()
        await harness.wait_finished(client, ["done-1"], alive=(w,))
        assert await client.result("done-1") == 49
        history = await client.history("done-1")

    line = failure(harness, "signal", "done-1", "approve", '"late"', *db)
    assert "'done-1'" in line and "completed" in line, line
    line = failure(harness, "cancel", "done-1", *db)
    assert "'done-1'" in line and "completed" in line, line
    async with harness.client() as client:
        assert await client.history("done-1") == history  # the refusals wrote nothing
        assert (await client.get("done-1")).state == "completed"


def _random_bytes(path: Path) -> str:
    data = os.urandom(16384)
    if data.startswith(b"SQLite"):
        data = b"x" + data
    path.write_bytes(data)
    return "not a SQLite database"


def _garbled_sqlite(path: Path) -> str:
    path.write_bytes(b"SQLite format 3\x00" + os.urandom(16384))
    return "is not a SQLite database or is corrupted"


def _foreign_sqlite(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        conn.execute("INSERT INTO customers (name) VALUES ('ada'), ('grace')")
    return "not a Keel database"


@pytest.mark.parametrize(
    "make", [_random_bytes, _garbled_sqlite, _foreign_sqlite], ids=["random", "garbled", "foreign"]
)
def test_unusable_database_files_are_refused_untouched(
    harness: Harness, make: Any, tmp_path: Path
) -> None:
    path = tmp_path / "other.db"
    expected = make(path)
    before = path.read_bytes()
    url = f"sqlite:///{path}"

    line = failure(harness, "runs", "list", "--db", url)
    assert str(path) in line and expected in line, line
    line = failure(harness, "start", "acc.typed", "1", "--app", FLOWS, "--db", url)
    assert str(path) in line and expected in line, line

    w = harness.worker(db=url)
    code = w.wait(timeout=20)
    assert code == 1, w.output()
    stderr = w.err.read_text()
    assert "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and str(path) in last and expected in last, stderr

    assert path.read_bytes() == before, "the file was modified"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("other")) == [
        "other.db"
    ], "a -wal/-shm/-journal file was created next to it"
