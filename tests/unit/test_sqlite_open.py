"""Opening SQLite files: refusing foreign ones, migrating, sharing one file, URLs."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from keel.core.states import RunState
from keel.errors import ConfigurationError, DatabaseError, LeaseLostError, StoreError
from keel.store import MemoryStore, NewEvent, NewRun, SQLiteStore, open_store
from keel.store._sqlfiles import parse_named
from keel.store.ports import Committed, Turn
from keel.store.sqlite import _sql
from keel.testing.conformance import event, new_run, wait_until_past


def run(body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(body())


async def open_fails(path: Path) -> DatabaseError:
    store = SQLiteStore(path)
    with pytest.raises(DatabaseError) as info:
        await store.open()
    await store.close()
    return info.value


def sqlite_rows(path: Path, query: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(query).fetchall()
    finally:
        conn.close()


def files_in(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# -- refusing files that are not ours --------------------------------------------------


def test_garbage_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a database\x00" * 100)
    before = files_in(tmp_path)

    async def main() -> None:
        err = await open_fails(path)
        assert "is not a SQLite database" in str(err) and str(path) in str(err)

    run(main)
    assert files_in(tmp_path) == before


def test_foreign_sqlite_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO users (name) VALUES ('ada')")
    conn.commit()
    conn.close()
    before = files_in(tmp_path)

    async def main() -> None:
        err = await open_fails(path)
        assert "is not a Keel database" in str(err) and "users" in str(err)

    run(main)
    assert files_in(tmp_path) == before


def test_keel_meta_without_marker_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "meta.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE keel_meta (key TEXT PRIMARY KEY, value TEXT)")
    conn.commit()
    conn.close()

    async def main() -> None:
        assert "is not a Keel database" in str(await open_fails(path))

    run(main)


def test_newer_schema_version_is_refused_naming_both_versions(tmp_path: Path) -> None:
    path = tmp_path / "keel.db"

    async def create() -> None:
        store = SQLiteStore(path)
        await store.open()
        await store.close()

    run(create)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE keel_meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()

    async def main() -> None:
        err = await open_fails(path)
        assert "99" in str(err) and str(_sql.latest_version()) in str(err)
        assert "upgrade Keel" in str(err)

    run(main)


def test_missing_directory_or_directory_path_is_a_database_error(tmp_path: Path) -> None:
    async def main() -> None:
        await open_fails(tmp_path / "no" / "such" / "dir" / "keel.db")
        assert "directory" in str(await open_fails(tmp_path))

    run(main)


# -- creating and migrating -----------------------------------------------------------


def test_new_file_gets_schema_wal_and_recorded_version(tmp_path: Path) -> None:
    path = tmp_path / "new.db"

    async def main() -> None:
        store = SQLiteStore(path)
        await store.open()
        await store.runs.create(new_run("r1"))
        await store.close()

    run(main)
    meta = dict(sqlite_rows(path, "SELECT key, value FROM keel_meta"))
    assert meta == {"application": "keel", "schema_version": str(_sql.latest_version())}
    assert sqlite_rows(path, "PRAGMA journal_mode") == [("wal",)]
    assert sqlite_rows(path, "SELECT run_id FROM runs") == [("r1",)]


def test_empty_existing_file_is_initialised(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()

    async def main() -> None:
        store = SQLiteStore(path)
        await store.open()
        await store.runs.create(new_run("r1"))
        await store.close()

    run(main)
    assert sqlite_rows(path, "SELECT count(*) FROM runs") == [(1,)]


def test_reopen_keeps_data_and_does_not_migrate_again(tmp_path: Path) -> None:
    path = tmp_path / "keel.db"

    async def first() -> None:
        store = SQLiteStore(path)
        await store.open()
        _, lease, _ = await store.runs.create(new_run("r1"), lease_owner="w1")
        assert lease is not None
        await store.runs.commit(lease, Turn(1, [event(1)]))
        await store.close()

    async def second() -> None:
        store = SQLiteStore(path)
        await store.open()
        got = await store.reads.get_run("r1")
        assert got is not None and got.next_seq == 2 and got.state is RunState.RUNNING
        assert [e.seq for e in await store.reads.history("r1")] == [0, 1]
        await store.close()

    run(first)
    run(second)
    assert len(sqlite_rows(path, "SELECT * FROM keel_meta")) == 2


def test_store_can_be_reopened_after_close(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "keel.db")

    async def use(run_id: str) -> None:
        await store.open()
        await store.runs.create(new_run(run_id))
        await store.close()

    run(lambda: use("a"))
    run(lambda: use("b"))  # a new event loop, the same store object

    async def check() -> None:
        await store.open()
        assert [r.run_id for r in (await store.reads.list_runs()).runs] == ["b", "a"]
        await store.close()

    run(check)


def test_cancelled_open_leaves_a_store_that_closes_and_reopens(tmp_path: Path) -> None:
    async def main() -> None:
        store = SQLiteStore(tmp_path / "keel.db")
        task = asyncio.create_task(store.open())
        await asyncio.sleep(0)  # open() now waits for its writer thread
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(store.close(), 10)
        await store.open()
        assert await store.reads.get_run("r") is None
        await store.close()

    run(main)


def _schema_of(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    rows = conn.execute(
        "SELECT type, name, sql FROM sqlite_master "
        "WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY name"
    ).fetchall()
    # ALTER TABLE ADD COLUMN appends "\n, column ..." to the stored CREATE TABLE.
    return [
        (t, n, " ".join(re.sub(r"--[^\n]*", "", sql).split()).replace(" ,", ","))
        for t, n, sql in rows
    ]


def test_a_store_migrates_a_new_file_to_the_schema_the_migration_scripts_build(
    tmp_path: Path,
) -> None:
    # schema_script() runs every migration file as a plain script: the store's
    # migrate() (statement by statement, in one BEGIN IMMEDIATE, foreign keys off)
    # must end with the same schema.
    path = tmp_path / "migrated.db"

    async def main() -> None:
        store = SQLiteStore(path)
        await store.open()
        await store.close()

    run(main)
    migrated = sqlite3.connect(path)
    reference = sqlite3.connect(":memory:")
    try:
        reference.executescript(_sql.schema_script())
        assert _schema_of(migrated) == _schema_of(reference)
    finally:
        migrated.close()
        reference.close()


def test_concurrent_first_opens_of_one_new_file_are_safe(tmp_path: Path) -> None:
    async def main(path: Path) -> None:
        stores = [SQLiteStore(path) for _ in range(6)]
        await asyncio.gather(*(s.open() for s in stores))
        results = await asyncio.gather(*(s.runs.create(new_run("same")) for s in stores))
        assert sum(created for _, _, created in results) == 1
        for s in stores:
            await s.close()

    for attempt in range(5):  # the race is between threads: give it several chances
        path = tmp_path / f"race{attempt}.db"
        run(lambda: main(path))  # noqa: B023 - run() calls it at once
        assert sqlite_rows(path, "SELECT count(*) FROM events") == [(1,)]
        assert sqlite_rows(path, "SELECT value FROM keel_meta WHERE key = 'schema_version'") == [
            (str(_sql.latest_version()),)
        ]


def test_sql_files_load_as_package_resources() -> None:
    assert _sql.latest_version() >= 1
    assert {"fenced_append", "claim_candidates", "insert_run"} <= set(_sql.queries())
    assert 'CREATE TABLE "runs"' in _sql.schema_script()  # quoted: rebuilt by version 7


def test_named_query_parser_and_script_splitter() -> None:
    parsed = parse_named("-- header\n-- name: a\nSELECT 1;\n\n-- name: b\nSELECT 2;\n")
    assert parsed == {"a": "SELECT 1;", "b": "SELECT 2;"}
    with pytest.raises(ValueError):
        parse_named("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n")
    script = "CREATE TABLE t (x); -- note\nINSERT INTO t VALUES (';');\n-- trailing comment\n"
    assert _sql.split_script(script) == [
        "CREATE TABLE t (x); -- note",
        "INSERT INTO t VALUES (';');",
    ]
    with pytest.raises(ValueError):
        _sql.split_script("SELECT 1")


# -- sharing one file -----------------------------------------------------------------


def test_group_commit_isolates_a_failing_operation(tmp_path: Path) -> None:
    async def main() -> None:
        store = SQLiteStore(tmp_path / "keel.db")
        await store.open()
        leases = []
        for i in range(30):
            _, lease, _ = await store.runs.create(new_run(f"r{i}"), lease_owner="w1")
            assert lease is not None
            leases.append(lease)
        sid = await store.mailbox.send("r0", "go", b"1")
        await store.runs.commit(leases[0], Turn(1, [event(1)], consume_signal=sid))
        assert store.db.writer is not None
        commits = store.db.writer.commits
        # Concurrent writes share transactions; the bad ones (wrong seq, a consumed
        # signal: it fails after its events were inserted) must roll back alone.
        outcomes = await asyncio.gather(
            store.runs.commit(leases[0], Turn(2, [event(2)], consume_signal=sid)),
            *(store.runs.commit(lease, Turn(1, [event(1), event(2)])) for lease in leases[1:]),
            store.runs.commit(leases[5], Turn(7, [event(9)])),
            return_exceptions=True,
        )
        assert store.db.writer.commits - commits < len(outcomes)  # really grouped
        assert isinstance(outcomes[0], StoreError) and isinstance(outcomes[-1], StoreError)
        assert all(o == Committed() for o in outcomes[1:-1])
        assert [e.seq for e in await store.reads.history("r0")] == [0, 1]
        assert [e.seq for e in await store.reads.history("r5")] == [0, 1, 2]
        for i in range(1, 30):
            got = await store.reads.get_run(f"r{i}")
            assert got is not None and got.next_seq == 3
        await store.close()

    run(main)


def test_two_stores_on_one_file_fence_each_other(tmp_path: Path) -> None:
    path = tmp_path / "keel.db"

    async def main() -> None:
        a, b = SQLiteStore(path), SQLiteStore(path)
        await a.open()
        await b.open()
        _, lease, _ = await a.runs.create(new_run("r1"), lease_owner="wa", lease_ttl=0.05)
        assert lease is not None
        await wait_until_past(a, lease.expires_at)
        [claimed] = await b.runs.claim("wb", limit=1, ttl=30)
        assert claimed.lease.token > lease.token
        with pytest.raises(LeaseLostError):
            await a.runs.commit(lease, Turn(1, [event(1)]))
        # b's commit reaches a's wait_for_change through the data_version watcher.
        waiter = asyncio.create_task(a.changes.wait(10))
        await asyncio.sleep(0.05)
        start = time.monotonic()
        await b.runs.commit(claimed.lease, Turn(1, [event(1)]))
        await asyncio.wait_for(waiter, 5)
        assert time.monotonic() - start < 2
        await a.close()
        await b.close()

    run(main)


_CLAIMER = textwrap.dedent(
    """
    import asyncio, json, sys
    from keel.store import SQLiteStore

    async def main(path, owner):
        store = SQLiteStore(path)
        await store.open()
        print("ready", flush=True)
        sys.stdin.readline()  # the parent says go once both are ready
        got = []
        while True:
            claimed = await store.runs.claim(owner, limit=1, ttl=300)
            if not claimed:
                break
            got.extend(c.lease.run_id for c in claimed)
        await store.close()
        print(json.dumps(got), flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


def test_two_processes_never_claim_the_same_run(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    ids = {f"run-{i:03d}" for i in range(200)}

    async def setup() -> None:
        store = SQLiteStore(path)
        await store.open()
        for run_id in sorted(ids):
            await store.runs.create(new_run(run_id))
        await store.close()

    run(setup)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CLAIMER, str(path), owner],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for owner in ("p1", "p2")
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "ready\n", proc.stderr and proc.stderr.read()
        claims = []
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            out, err = proc.communicate(timeout=40)
            assert proc.returncode == 0, err
            claims.append(json.loads(out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    first, second = set(claims[0]), set(claims[1])
    assert len(first) == len(claims[0]) and len(second) == len(claims[1])
    assert first & second == set()
    assert first | second == ids
    assert first and second  # both really competed


# -- configuration --------------------------------------------------------------------


def test_open_store_maps_urls_to_backends(tmp_path: Path) -> None:
    assert isinstance(open_store("memory://"), MemoryStore)
    absolute = open_store(f"sqlite:///{tmp_path}/a.db")
    assert isinstance(absolute, SQLiteStore) and absolute.path == tmp_path / "a.db"
    relative = open_store("sqlite:///data/b.db")
    assert isinstance(relative, SQLiteStore) and relative.path == Path("data/b.db")
    for bare in ("keel.db", "x/y.sqlite", "z.SQLITE3"):
        store = open_store(bare)
        assert isinstance(store, SQLiteStore) and store.path == Path(bare)
    normal = open_store(f"sqlite:///{tmp_path}/c.db?synchronous=normal")
    assert isinstance(normal, SQLiteStore) and normal.synchronous == "NORMAL"
    assert open_store(absolute.url).path == absolute.path  # url round-trips


@pytest.mark.parametrize(
    "url",
    [
        "",
        "mysql://localhost/keel",
        "keel.txt",
        "memory",
        "sqlite://",
        "sqlite://:memory:",
        "sqlite:///:memory:",
        "sqlite://relative.db",
        "sqlite:///tmp/x.db?journal=off",
        "sqlite:///tmp/x.db?synchronous=OFF",
    ],
)
def test_open_store_rejects_bad_urls(url: str) -> None:
    with pytest.raises(ConfigurationError):
        open_store(url)


def test_store_options_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        SQLiteStore(tmp_path / "x.db", synchronous="OFF")
    with pytest.raises(ConfigurationError):
        SQLiteStore(tmp_path / "x.db", busy_timeout=0)

    async def main() -> None:
        store = SQLiteStore(tmp_path / "x.db")
        with pytest.raises(StoreError):
            await store.reads.get_run("r")  # not open yet
        await store.open()
        started = NewEvent("run_started", None, b"{}")
        await store.runs.create(NewRun("r", "wf", "v1", b"{}", started))
        await store.close()

    run(main)
