"""PostgreSQL schema management: migrations equal schema.sql, versions, concurrency, DBA SQL."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from keel.errors import DatabaseError
from keel.store.postgres import PostgresStore, _sql
from keel.testing.conformance import new_run
from tests.pg import drop_database_later, empty_database_url, postgres_server  # noqa: F401

# The catalog of one schema, in comparable form: what a migration could get wrong.
CATALOG: dict[str, str] = {
    "columns": """
        SELECT table_name, column_name, ordinal_position, data_type, collation_name,
               is_nullable, column_default
        FROM information_schema.columns WHERE table_schema = %(schema)s
        ORDER BY table_name, ordinal_position""",
    "constraints": """
        SELECT cl.relname, co.conname, pg_get_constraintdef(co.oid)
        FROM pg_constraint co JOIN pg_class cl ON cl.oid = co.conrelid
        WHERE co.connamespace = %(schema)s::regnamespace ORDER BY 1, 2""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes
        WHERE schemaname = %(schema)s ORDER BY 1, 2""",
    "relations": """
        SELECT relname, relkind, reloptions FROM pg_class
        WHERE relnamespace = %(schema)s::regnamespace ORDER BY 1""",
    "sequences": """
        SELECT sequencename, data_type, start_value, increment_by, cache_size, cycle
        FROM pg_sequences WHERE schemaname = %(schema)s ORDER BY 1""",
}


@pytest.fixture
def empty_url(postgres_server: str) -> Iterator[str]:  # noqa: F811
    url = empty_database_url()
    yield url
    drop_database_later(url)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def opened(url: str, **options: Any) -> None:
    store = PostgresStore(url, **options)
    await store.open()
    await store.close()


def catalog(url: str, schema: str = "keel") -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(url) as conn:
        return {
            name: conn.execute(query, {"schema": schema}).fetchall()
            for name, query in CATALOG.items()
        }


def execute_script(url: str, script: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(script)


def meta(url: str, schema: str = "keel") -> dict[str, str]:
    with psycopg.connect(url) as conn:
        query = sql.SQL("SELECT key, value FROM {}.keel_meta").format(sql.Identifier(schema))
        return dict(conn.execute(query).fetchall())


def schema_dump(url: str) -> str:
    """``pg_dump --schema-only`` of Keel's schema, without comments and settings."""
    out = subprocess.run(
        ["pg_dump", "--schema-only", "--no-owner", "--schema=keel", url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    skip = ("--", "SET ", "SELECT ", "\\")  # comments, settings, \restrict <random key>
    lines = [ln for ln in out.splitlines() if ln and not ln.startswith(skip)]
    return "\n".join(lines)


def test_migrations_build_exactly_schema_sql(empty_url: str) -> None:
    migrated = empty_url
    run(opened(migrated))
    reference = empty_database_url()
    try:
        execute_script(
            reference, "CREATE SCHEMA keel; SET search_path TO keel;\n" + _sql.schema_script()
        )
        ours, theirs = catalog(migrated), catalog(reference)
        assert ours["columns"] and ours["indexes"] and ours["sequences"]
        for part in CATALOG:
            assert ours[part] == theirs[part], part
        if shutil.which("pg_dump"):
            assert schema_dump(migrated) == schema_dump(reference)
    finally:
        drop_database_later(reference)
    assert meta(migrated) == {"application": "keel", "schema_version": str(_sql.latest_version())}


def test_schema_sql_names_the_latest_version() -> None:
    latest = _sql.latest_version()
    assert f"(version {latest})" in _sql.schema_script()
    assert f"('schema_version', '{latest}')" in _sql.schema_script()


def test_newer_schema_is_refused_naming_both_versions(empty_url: str) -> None:
    run(opened(empty_url))
    latest = _sql.latest_version()
    execute_script(
        empty_url, f"UPDATE keel.keel_meta SET value = '{latest + 7}' WHERE key = 'schema_version'"
    )
    with pytest.raises(DatabaseError, match=rf"version {latest + 7}.*up to {latest}"):
        run(opened(empty_url))


def test_foreign_schema_is_refused_and_other_schemas_are_left_alone(empty_url: str) -> None:
    execute_script(
        empty_url,
        "CREATE TABLE public.orders (id int); CREATE SCHEMA keel; CREATE TABLE keel.stuff (id int)",
    )
    with pytest.raises(DatabaseError, match=r"not a Keel schema.*stuff"):
        run(opened(empty_url))
    run(opened(empty_url, schema="jobs"))  # an app's database with Keel in its own schema
    assert meta(empty_url, "jobs")["schema_version"] == str(_sql.latest_version())
    tables = catalog(empty_url, "jobs")["relations"]
    assert {"runs", "events", "signals", "run_payloads", "keel_meta"} <= {t[0] for t in tables}
    with psycopg.connect(empty_url) as conn:
        assert conn.execute("SELECT count(*) FROM public.orders").fetchone() == (0,)


def test_without_auto_migrate_an_old_schema_is_an_error_until_migrated(empty_url: str) -> None:
    with pytest.raises(DatabaseError, match="keel db migrate"):
        run(opened(empty_url, auto_migrate=False))

    async def main() -> None:
        store = PostgresStore(empty_url, auto_migrate=False)
        assert await store.schema_version() == 0
        assert await store.migrate() == [n for n, _ in _sql.migrations()]
        assert await store.schema_version() == store.LATEST_SCHEMA
        assert await store.migrate() == []
        await store.open()
        try:
            await store.runs.create(new_run("r1"))
        finally:
            await store.close()

    run(main())


def test_concurrent_opens_migrate_once(empty_url: str) -> None:
    async def main() -> None:
        stores = [PostgresStore(empty_url) for _ in range(6)]
        await asyncio.gather(*(s.open() for s in stores))
        await stores[0].runs.create(new_run("r1"))
        assert (await stores[-1].reads.get_run("r1")) is not None
        await asyncio.gather(*(s.close() for s in stores))

    run(main())
    assert meta(empty_url)["schema_version"] == str(_sql.latest_version())


def test_migration_sql_is_what_a_dba_runs(empty_url: str) -> None:
    store = PostgresStore(empty_url, auto_migrate=False)
    pending = run(store.migration_sql())
    assert run(store.migration_sql(pending_only=False)) == pending
    assert re.search(r"^BEGIN;$.*CREATE TABLE runs.*^COMMIT;$", pending, re.S | re.M)
    execute_script(empty_url, pending)
    run(opened(empty_url, auto_migrate=False))  # the DBA's run left it up to date
    assert "up to date" in run(store.migration_sql())
    assert run(store.migrate()) == []


def test_no_index_of_runs_covers_what_a_step_commit_changes(empty_url: str) -> None:
    # A step commit's UPDATE of runs sets next_seq and updated_at only. With no
    # index on either (nor in an index's predicate), PostgreSQL can make that
    # UPDATE HOT: no new entry in every index of runs on every step.
    run(opened(empty_url))
    with psycopg.connect(empty_url) as conn:
        defs = [
            row[0]
            for row in conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = 'keel' AND tablename = 'runs'"
            )
        ]
    assert any("ended_at" in d for d in defs)  # the end-time index is on the generated column
    for d in defs:
        assert "updated_at" not in d and "next_seq" not in d, d
