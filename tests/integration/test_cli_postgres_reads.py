"""Read commands on a PostgreSQL database without Keel's schema refuse it and create nothing.

It may be the application's own database: a read must never put a schema there.
"""

from __future__ import annotations

import psycopg
import pytest

from keel.errors import SchemaMissingError
from keel.store.postgres import PostgresStore
from tests import pg
from tests.integration.test_cli import assert_clean_error, keel_cli


def schemas(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
            "AND nspname <> 'information_schema' ORDER BY nspname"
        ).fetchall()
    return [name for (name,) in rows]


@pytest.mark.parametrize(
    "args",
    [
        ("runs", "list"),
        ("runs", "show", "r1"),
        ("runs", "history", "r1"),
        ("schedules", "list"),
        ("cancel", "r1"),
    ],
    ids=lambda a: " ".join(a),
)
def test_reads_refuse_a_database_without_keel_schema(args: tuple[str, ...]) -> None:
    pg.require_postgres()
    url = pg.empty_database_url()
    before = schemas(url)
    result = keel_cli(*args, "--db", url)
    assert_clean_error(result, 1, "no Keel schema here", "keel db migrate")
    assert schemas(url) == before == ["public"]  # no "keel" schema was made


async def test_store_without_auto_migrate_refuses_an_empty_database() -> None:
    pg.require_postgres()
    url = pg.empty_database_url()
    store = PostgresStore(url, auto_migrate=False)
    with pytest.raises(SchemaMissingError, match="no Keel schema here"):
        await store.open()
    await store.close()
    assert "keel" not in schemas(url)
