"""Loading the SQL that ships next to this module, and mapping rows to records."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Any

from keel.core.states import RunState
from keel.store.base import EventRecord, RunRecord, SignalRecord

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
_PACKAGE = "keel.store.postgres"
_MIGRATION = re.compile(r"^(\d{4})_\w+\.sql$")


def _read(name: str) -> str:
    return resources.files(_PACKAGE).joinpath(name).read_text(encoding="utf-8")


def parse_named(text: str) -> dict[str, str]:
    """Split a file of ``-- name: foo`` sections into ``{"foo": sql}``."""
    parts = _NAME.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"duplicate query name {name!r}")
        # psycopg sends one statement per execute: drop the trailing semicolon
        queries[name] = body.strip().removesuffix(";")
    return queries


@cache
def queries() -> dict[str, str]:
    """The named queries of ``queries.sql``."""
    return parse_named(_read("queries.sql"))


@cache
def migrations() -> tuple[tuple[int, str], ...]:
    """``(version, script)`` of every file in ``migrations/``, in version order."""
    folder = resources.files(_PACKAGE).joinpath("migrations")
    found: list[tuple[int, str]] = []
    for entry in folder.iterdir():
        m = _MIGRATION.match(entry.name)
        if m:
            found.append((int(m.group(1)), entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [v for v, _ in found]
    if versions != list(range(1, len(versions) + 1)):
        raise RuntimeError(f"Keel PostgreSQL migrations are not numbered 1..n: {versions}")
    return tuple(found)


def latest_version() -> int:
    """The schema version this code creates and understands."""
    return len(migrations())


def schema_script() -> str:
    """The full current schema (``schema.sql``), for reference and tests."""
    return _read("schema.sql")


def run_record(row: Any, offset: int = 0) -> RunRecord:
    """A run selected in RunRecord field order, starting at column ``offset``."""
    r = row[offset : offset + 15]
    return RunRecord(
        run_id=r[0],
        workflow=r[1],
        version=r[2],
        state=RunState(r[3]),
        input=r[4],
        result=r[5],
        error=r[6],
        created_at=r[7],
        updated_at=r[8],
        wake_at=r[9],
        lease_owner=r[10],
        lease_token=r[11],
        lease_expires_at=r[12],
        cancel_requested=r[13],
        next_seq=r[14],
    )


def event_record(row: Any) -> EventRecord:
    return EventRecord(row[0], row[1], row[2], row[3], row[4], row[5])


def signal_record(row: Any) -> SignalRecord:
    return SignalRecord(row[0], row[1], row[2], row[3], row[4])
