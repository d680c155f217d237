"""The SQL that ships next to this module: named queries, migrations, the schema."""

from __future__ import annotations

import sqlite3

from keel.store._sqlfiles import SqlFiles

FILES = SqlFiles("keel.store.sqlite", "SQLite")
#: The named queries of ``queries.sql``.
Q = FILES.queries
latest_version = FILES.latest_version
schema_script = FILES.schema_script


def queries() -> dict[str, str]:
    """The named queries of ``queries.sql``."""
    return Q


def migrations() -> tuple[tuple[int, str], ...]:
    """``(version, script)`` of every file in ``migrations/``, in version order."""
    return FILES.migrations


def split_script(script: str) -> list[str]:
    """Split a SQL script into complete statements.

    ``executescript`` would COMMIT any open transaction first, so migrations are
    run statement by statement inside the caller's transaction instead.
    """
    statements: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            statements.append(buf.strip())
            buf = ""
    if buf.strip() and not all(
        ln.strip().startswith("--") or not ln.strip() for ln in buf.splitlines()
    ):
        raise ValueError(f"incomplete SQL statement at end of script: {buf.strip()[:80]!r}")
    return statements
