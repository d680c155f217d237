"""Several stores on one SQLite file in one process, while other processes read it.

POSIX locks belong to a process and an inode: closing *any* descriptor of the
file drops every lock the process holds on it, SQLite's included. SQLite's own
connections know this (they share one lock table per file and keep closed
descriptors until no lock remains); anything else that opens the file must not.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import keel
from keel.store.sqlite import SQLiteStore
from tests.acceptance.harness import KEEL_CMD


@keel.workflow(name="one_process.double")
async def double(n: int) -> int:
    return 2 * n


def keel_runs(db: Path) -> dict[str, str]:
    """``keel runs list --json`` in another process: run id -> state."""
    proc = subprocess.run(
        [*KEEL_CMD, "runs", "list", "--db", str(db), "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return {r["run_id"]: r["state"] for r in json.loads(proc.stdout)["runs"]}


def inode(path: Path) -> int | None:
    """The file's inode number, ``None`` if it does not exist."""
    return path.stat().st_ino if path.exists() else None


async def test_stores_in_one_process_keep_their_locks_while_others_read(tmp_path: Path) -> None:
    db = tmp_path / "keel.db"
    wal = Path(f"{db}-wal")
    async with (
        keel.Worker(SQLiteStore(db), poll_interval=0.05) as worker,
        keel.Client(SQLiteStore(db)) as client,
    ):
        await client.start(double, 1, run_id="before")
        assert await client.result("before", timeout=20) == 2

        second = SQLiteStore(db)  # a second store on the file, opened and closed
        await second.open()
        await second.close()
        wal_inode = inode(wal)
        assert wal_inode is not None

        assert keel_runs(db) == {"before": "completed"}
        # The reader found this process's locks in place: it left the WAL alone.
        assert inode(wal) == wal_inode

        # The first client still writes, the worker still sees new runs...
        await client.start(double, 21, run_id="after")
        assert await client.result("after", timeout=20) == 42
        assert worker.store is not client.store
        # ...and other processes still see this process's writes.
        assert keel_runs(db) == {"before": "completed", "after": "completed"}
        assert inode(wal) == wal_inode
