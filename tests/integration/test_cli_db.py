"""``keel db migrate``: apply or print the schema, on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from keel.store.sqlite import _sql as sqlite_sql
from tests import pg
from tests.integration.test_cli import keel_cli


def test_sqlite_migrate_creates_schema_and_print_shows_sql(tmp_path: Path) -> None:
    db = tmp_path / "k.db"
    printed = keel_cli("db", "migrate", "--print", "--db", str(db))
    assert printed.exit_code == 0
    assert "-- migration 0001" in printed.output and "CREATE TABLE runs" in printed.output
    assert "-- migration 0002" in printed.output and "idempotency_keys" in printed.output
    assert "-- migration 0003" in printed.output and "tasks" in printed.output
    assert "-- migration 0004" in printed.output and "CREATE TABLE queues" in printed.output
    assert "-- migration 0005" in printed.output and "schedules" in printed.output
    assert not db.exists()  # printing writes nothing
    applied = keel_cli("db", "migrate", "--db", str(db))
    latest = sqlite_sql.latest_version()  # not a literal: migrations land from several branches
    assert applied.exit_code == 0 and f"version {latest}" in applied.output
    with sqlite3.connect(db) as conn:
        version = conn.execute("SELECT value FROM keel_meta WHERE key = 'schema_version'")
        assert version.fetchone() == (str(latest),)


def test_postgres_migrate_print_then_apply() -> None:
    pg.require_postgres()
    url = pg.empty_database_url()
    printed = keel_cli("db", "migrate", "--print", "--db", url)
    assert printed.exit_code == 0, printed.output
    assert printed.output.startswith("-- Keel PostgreSQL schema")
    assert "CREATE TABLE idempotency_keys" in printed.output
    with psycopg.connect(url) as conn:  # --print changed nothing
        row = conn.execute("SELECT to_regclass('keel.runs')").fetchone()
        assert row == (None,)
    applied = keel_cli("db", "migrate", "--db", url)
    assert applied.exit_code == 0 and "applied migration(s) 1, 2, 3" in applied.output
    again = keel_cli("db", "migrate", "--db", url)
    assert "up to date" in again.output
    pending = keel_cli("db", "migrate", "--print", "--db", url)
    assert "CREATE TABLE" not in pending.output


@pytest.mark.parametrize("bad", ["mysql://x/db", "memory://"])
def test_migrate_refuses_urls_without_a_schema(bad: str) -> None:
    result = keel_cli("db", "migrate", "--db", bad)
    assert result.exit_code == 1 and result.stderr.startswith("error: ")
