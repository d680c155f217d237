"""Keel's schema in a PostgreSQL database: version checks, migrations, the DBA script.

Keel keeps its tables in one schema (default ``keel``) so it can share an
application's database; ``keel_meta`` in that schema marks it as Keel's and
records the version. Migrating holds a transaction-level advisory lock, so
several processes may open a new database at once.
"""

from __future__ import annotations

import zlib
from typing import Any

import psycopg
from psycopg import sql

from keel.errors import DatabaseError, SchemaMissingError
from keel.store.postgres._sql import Q, latest_version, migrations

_LOCK_CLASS = 0x6B65656C  # "keel": the first key of Keel's advisory locks
MARKER_KEY = "application"
MARKER_VALUE = "keel"


def lock_key(schema: str) -> tuple[int, int]:
    """The advisory lock serialising migrations of ``schema`` (two int4 keys)."""
    crc = zlib.crc32(schema.encode())
    return _LOCK_CLASS, crc - (1 << 32) if crc >= 1 << 31 else crc


async def schema_version(conn: psycopg.AsyncConnection[Any], schema: str, target: str) -> int:
    """The Keel schema version of ``schema`` (0 if it holds nothing); raise if not ours."""
    cur = await conn.execute(Q["schema_tables"], {"schema": schema}, prepare=False)
    tables = [row[0] for row in await cur.fetchall()]
    where = f"schema {schema!r} of {target}"
    if not tables:
        return 0
    if "keel_meta" not in tables:
        shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
        raise DatabaseError(
            f"{where} is not a Keel schema (it holds other tables: {shown}); refusing to "
            "modify it; give Keel a schema of its own (schema=...)"
        )
    cur = await conn.execute(Q["schema_meta"], prepare=False)
    meta = {str(k): str(v) for k, v in await cur.fetchall()}
    if meta.get(MARKER_KEY) != MARKER_VALUE:
        raise DatabaseError(f"{where} is not a Keel schema (keel_meta has no Keel marker)")
    try:
        version = int(meta.get("schema_version", "0"))
    except ValueError:
        raise DatabaseError(
            f"{where} has a malformed schema_version {meta['schema_version']!r}"
        ) from None
    latest = latest_version()
    if version > latest:
        raise DatabaseError(
            f"{where} has Keel schema version {version}, but this Keel knows versions up to "
            f"{latest}; upgrade Keel to use it"
        )
    return version


async def migrate(conn: psycopg.AsyncConnection[Any], schema: str, target: str) -> list[int]:
    """Apply the missing migrations in one transaction; return the versions applied."""
    async with conn.transaction():
        key1, key2 = lock_key(schema)
        await conn.execute(Q["migration_lock"], {"key1": key1, "key2": key2}, prepare=False)
        name = sql.Identifier(schema)
        await conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(name))
        # Re-read under the lock: another process may have migrated meanwhile.
        version = await schema_version(conn, schema, target)
        pending = [(n, script) for n, script in migrations() if n > version]
        if not pending:
            return []
        await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(name))
        for _, script in pending:
            await conn.execute(script, prepare=False)
        await conn.execute(Q["set_schema_version"], {"version": str(pending[-1][0])}, prepare=False)
        return [n for n, _ in pending]


async def prepare(
    conn: psycopg.AsyncConnection[Any], schema: str, target: str, *, auto_migrate: bool
) -> None:
    """Check the schema on open; migrate it unless ``auto_migrate`` is off.

    Without ``auto_migrate`` nothing is created: a database without Keel's
    schema raises :class:`SchemaMissingError` (it may be an application's own).
    """
    version = await schema_version(conn, schema, target)  # read-only, no lock when up to date
    latest = latest_version()
    if version == latest:
        return
    if not auto_migrate and version == 0:
        raise SchemaMissingError(
            f"no Keel schema here: schema {schema!r} of {target} holds no Keel tables "
            "(run `keel db migrate`)"
        )
    if not auto_migrate:
        raise DatabaseError(
            f"schema {schema!r} of {target} has Keel schema version {version}, but this Keel "
            f"needs version {latest}; run `keel db migrate` (or open with auto_migrate=True)"
        )
    await migrate(conn, schema, target)


def migration_script(schema: str, after_version: int) -> str:
    """SQL applying every migration newer than ``after_version``, for a DBA to run."""
    pending = [(n, script) for n, script in migrations() if n > after_version]
    if not pending:
        return f"-- Keel schema {schema!r} is up to date (version {after_version}).\n"
    key1, key2 = lock_key(schema)
    parts = [
        f"-- Keel PostgreSQL schema {schema!r}: migrations "
        f"{pending[0][0]}..{pending[-1][0]}, in one transaction.",
        "BEGIN;",
        f"SELECT pg_advisory_xact_lock({key1}, {key2});",
        f"CREATE SCHEMA IF NOT EXISTS {schema};",
        f"SET LOCAL search_path TO {schema};",
    ]
    for number, script in pending:
        parts += [f"\n-- migration {number:04d}", script.strip()]
    parts += [
        "",
        f"INSERT INTO keel_meta (key, value) VALUES ('schema_version', '{pending[-1][0]}')",
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value;",
        "COMMIT;",
    ]
    return "\n".join(parts) + "\n"
