"""Loading the SQL that ships next to this module, and mapping rows to records."""

from __future__ import annotations

import sqlite3
from typing import Any

from keel.core.states import RunState
from keel.store._sqlfiles import SqlFiles
from keel.store.base import EventRecord, RunRecord, ScheduleRecord, SignalRecord, TaskRecord

FILES = SqlFiles("keel.store.sqlite", "SQLite")


def queries() -> dict[str, str]:
    """The named queries of ``queries.sql``."""
    return FILES.queries


def migrations() -> tuple[tuple[int, str], ...]:
    """``(version, script)`` of every file in ``migrations/``, in version order."""
    return FILES.migrations


def latest_version() -> int:
    """The schema version this code creates and understands."""
    return FILES.latest_version()


def schema_script() -> str:
    """The full current schema (``schema.sql``), for reference and tests."""
    return FILES.schema_script()


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


def run_record(row: Any) -> RunRecord:
    """A ``runs`` row selected in RunRecord field order."""
    return RunRecord(
        run_id=row[0],
        workflow=row[1],
        version=row[2],
        state=RunState(row[3]),
        input=row[4],
        result=row[5],
        error=row[6],
        created_at=row[7],
        updated_at=row[8],
        wake_at=row[9],
        lease_owner=row[10],
        lease_token=row[11],
        lease_expires_at=row[12],
        cancel_requested=bool(row[13]),
        next_seq=row[14],
        parent_run_id=row[15],
        parent_close=row[16],
        depth=row[17],
        chain_id=row[18],
        generation=row[19],
        continued_to=row[20],
    )


def event_record(row: Any) -> EventRecord:
    return EventRecord(row[0], row[1], row[2], row[3], row[4], row[5])


def signal_record(row: Any) -> SignalRecord:
    return SignalRecord(row[0], row[1], row[2], row[3], row[4])


def task_record(row: Any) -> TaskRecord:
    """A ``tasks`` row selected in TaskRecord field order."""
    return TaskRecord(*row)


def schedule_record(row: Any) -> ScheduleRecord:
    """A ``schedules`` row selected in ScheduleRecord field order."""
    fields = list(row)
    fields[7] = bool(fields[7])  # paused: stored as 0/1
    return ScheduleRecord(*fields)
