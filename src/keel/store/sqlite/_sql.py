"""The SQL that ships next to this module: named queries and migrations."""

from __future__ import annotations

import re
import sqlite3
from functools import cache

from keel.store._sqlfiles import SqlFiles

FILES = SqlFiles("keel.store.sqlite", "SQLite")


def _expanded(queries: dict[str, str]) -> dict[str, str]:
    """The queries with each ``{name}`` replaced by the named fragment, in
    parentheses and without its comment lines."""

    def fragment(match: re.Match[str]) -> str:
        lines = queries[match.group(1)].splitlines()
        return "(" + "\n".join(ln for ln in lines if not ln.lstrip().startswith("--")) + ")"

    return {name: re.sub(r"\{(\w+)\}", fragment, sql) for name, sql in queries.items()}


#: The named queries of ``queries.sql``, fragments included.
Q = _expanded(FILES.queries)
latest_version = FILES.latest_version


def queries() -> dict[str, str]:
    """The named queries of ``queries.sql``."""
    return Q


def migrations() -> tuple[tuple[int, str], ...]:
    """``(version, script)`` of every file in ``migrations/``, in version order."""
    return FILES.migrations


@cache
def schema_script() -> str:
    """The current schema, for reading: the ``CREATE`` statements of a database
    the migrations build, in the order they made them (the migrations say why
    each part is there; one copy of the schema, so none can drift)."""
    conn = sqlite3.connect(":memory:")
    try:
        for _, script in migrations():
            conn.executescript(script)
        rows = conn.execute(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' "
            "ORDER BY rowid"
        )
        return "".join(f"{sql};\n\n" for (sql,) in rows)
    finally:
        conn.close()


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
