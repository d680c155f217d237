"""Load a plain-SQL ``pg_dump`` (``--inserts``, no psql meta-commands) with psycopg."""

from __future__ import annotations

from pathlib import Path

import psycopg


def load_dump(url: str, path: Path) -> None:
    """Run the dump's statements on the (empty) database at ``url``, in one transaction."""
    script = path.read_text()
    if any(line.startswith("\\") for line in script.splitlines()):
        raise ValueError(f"{path} holds psql meta-commands; psycopg cannot run them")
    with psycopg.connect(url) as conn:  # commits on a clean exit, rolls back on an error
        conn.execute(script.encode())  # bytes: no parameter placeholders to parse
