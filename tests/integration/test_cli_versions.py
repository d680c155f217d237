"""``keel versions list``: the workflow versions workers recorded, live or all."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from keel.store import SQLiteStore
from tests.integration.test_cli import keel_cli


def test_versions_list_shows_live_workers_and_all_with_the_flag(tmp_path: Path) -> None:
    db = tmp_path / "k.db"

    async def record() -> None:
        store = SQLiteStore(db)
        await store.open()
        try:
            await store.workers.register_versions(
                "w-live", [("orders", "v2"), ("billing", "b1")], host="h1", pid=11, live_for=60
            )
            await store.workers.register_versions(
                "w-gone", [("orders", "v1")], host="h2", pid=22, live_for=1e-6
            )
            deadline = time.monotonic() + 5
            while [v.worker for v in await store.workers.list_versions()] != ["w-live", "w-live"]:
                assert time.monotonic() < deadline, "w-gone's rows stayed live"
                await asyncio.sleep(0.001)  # until they are past live_until
        finally:
            await store.close()

    empty = keel_cli("versions", "list", "--db", str(db))
    assert empty.exit_code == 1 and "error: " in empty.stderr  # a read never creates the file
    asyncio.run(record())

    shown = keel_cli("versions", "list", "--db", str(db))
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0].split() == ["WORKFLOW", "VERSION", "WORKER", "HOST", "PID", "LAST", "SEEN"]
    assert [line.split()[:5] for line in lines[1:]] == [
        ["billing", "b1", "w-live", "h1", "11"],
        ["orders", "v2", "w-live", "h1", "11"],
    ]
    every = keel_cli("versions", "list", "--all", "--db", str(db))
    assert [(line.split()[1], line.split()[-1]) for line in every.output.splitlines()[1:]] == [
        ("b1", "yes"),
        ("v1", "no"),
        ("v2", "yes"),
    ]
    doc = json.loads(keel_cli("versions", "list", "--db", str(db), "--json").output)
    assert [(d["workflow"], d["version"], d["worker"], d["pid"]) for d in doc] == [
        ("billing", "b1", "w-live", 11),
        ("orders", "v2", "w-live", 11),
    ]


def test_versions_list_without_workers(tmp_path: Path) -> None:
    db = tmp_path / "k.db"

    async def create() -> None:
        store = SQLiteStore(db)
        await store.open()
        await store.close()

    asyncio.run(create())
    shown = keel_cli("versions", "list", "--db", str(db))
    assert shown.exit_code == 0 and shown.output.strip() == "no live worker versions"
