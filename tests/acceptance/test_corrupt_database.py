"""A damaged SQLite file: a worker says so once and exits non-zero; commands refuse it.

The file is a real Keel database whose pages (not only its header) are
overwritten, as a disk or a careless copy would leave it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

import keel
from keel.errors import DatabaseCorruptError
from keel.store.sqlite import SQLiteStore, _schema
from tests.acceptance.harness import Harness, error_line

pytestmark = pytest.mark.acceptance


@keel.workflow(name="corrupt.noop")
async def noop() -> None:
    return None


async def make_corrupt_database(path: Path, runs: int = 300) -> None:
    """A Keel database with ``runs`` pending runs, then damaged (see ``overwrite_pages``)."""
    async with keel.Client(SQLiteStore(path)) as client:
        for i in range(runs):
            await client.start(noop, run_id=f"r{i:04d}")
    overwrite_pages(path)


def overwrite_pages(path: Path) -> None:
    """Every third page after the second overwritten with noise (the schema page
    stays readable, so the file still opens as SQLite)."""
    data = path.read_bytes()
    page = int.from_bytes(data[16:18], "big")
    pages = len(data) // page
    assert pages > 10
    noise = bytearray(data)
    for n in range(2, pages, 3):
        noise[n * page : (n + 1) * page] = os.urandom(page)
    path.write_bytes(bytes(noise))


async def test_worker_and_commands_refuse_a_corrupt_file(harness: Harness) -> None:
    await make_corrupt_database(harness.db_path)
    db = ("--db", harness.db_url)

    w = harness.worker()
    code = w.wait(timeout=30)  # before: it logged a traceback every poll, forever
    stderr = w.err.read_text()
    assert code == 1, w.output()
    assert "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "corrupted" in last, stderr
    assert str(harness.db_path) in last

    for args in (("runs", "list"), ("runs", "show", "r0005"), ("runs", "history", "r0005")):
        proc = harness.cli(*args, *db)
        assert proc.returncode == 1, f"keel {' '.join(args)}: {proc.stdout}{proc.stderr}"
        line = error_line(proc.stderr)
        assert "corrupted" in line and str(harness.db_path) in line, line


async def test_worker_gives_up_on_corruption_found_while_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Corruption met by a store operation (a file too large to check at open):
    the worker logs it once, without a traceback, stops, and run() raises it."""
    path = tmp_path / "keel.db"
    await make_corrupt_database(path)
    monkeypatch.setattr(_schema, "QUICK_CHECK_MAX_BYTES", 0)  # skip the check at open

    worker = keel.Worker(SQLiteStore(path), poll_interval=0.05)
    with caplog.at_level(logging.INFO, logger="keel"), pytest.raises(DatabaseCorruptError) as info:
        await asyncio.wait_for(worker.run(), 30)
    assert "corrupted" in str(info.value) and str(path) in str(info.value)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert errors[0].exc_info is None and "corrupted" in errors[0].getMessage()

    store = SQLiteStore(path)  # a read that meets a damaged page: the typed error
    await store.open()
    try:
        with pytest.raises(DatabaseCorruptError):
            await store.runs.claim("me", limit=10, ttl=30)
    finally:
        await store.close()
