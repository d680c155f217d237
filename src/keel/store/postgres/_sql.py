"""Loading the SQL that ships next to this module, and mapping rows to records."""

from __future__ import annotations

import re
from typing import Any

from keel.core.states import RunState
from keel.store._sqlfiles import SqlFiles
from keel.store.base import EventRecord, RunRecord, ScheduleRecord, SignalRecord, TaskRecord

FILES = SqlFiles("keel.store.postgres", "PostgreSQL", strip_semicolon=True)


# The events of a fenced journal write, passed as arrays ...
_UNNEST_EVENTS = re.compile(
    r"unnest\(%\(types\)s::text\[\], %\(commands\)s::text\[\], %\(datas\)s::bytea\[\]\)"
    r"\s+WITH ORDINALITY AS e \(type, command, data, i\)"
)
# ... or, for a single event, as scalars (cheaper to send than three one-element arrays).
_ONE_EVENT = (
    "(VALUES (%(type)s::text, %(command)s::text, %(data)s::bytea, 1::bigint))"
    " AS e (type, command, data, i)"
)
#: Fenced journal writes that have a one-event variant, named ``<query>.1``.
ONE_EVENT_QUERIES = (
    "append_events",
    "suspend_run",
    "finish_run",
    "dispatch_tasks",
    "start_children",
    "continue_run",
)


def queries() -> dict[str, str]:
    """The named queries of ``queries.sql``, plus the ``<query>.1`` variants of
    :data:`ONE_EVENT_QUERIES` that take one event's ``type``, ``command`` and
    ``data`` as scalars instead of the ``types``, ``commands`` and ``datas`` arrays."""
    named = dict(FILES.queries)
    for name in ONE_EVENT_QUERIES:
        one, found = _UNNEST_EVENTS.subn(_ONE_EVENT, named[name])
        if found != 1:
            raise RuntimeError(f"queries.sql: {name} does not unnest its events as expected")
        named[f"{name}.1"] = one
    return named


def migrations() -> tuple[tuple[int, str], ...]:
    """``(version, script)`` of every file in ``migrations/``, in version order."""
    return FILES.migrations


def latest_version() -> int:
    """The schema version this code creates and understands."""
    return FILES.latest_version()


def schema_script() -> str:
    """The full current schema (``schema.sql``), for reference and tests."""
    return FILES.schema_script()


def run_record(row: Any, offset: int = 0) -> RunRecord:
    """A run selected in RunRecord field order, starting at column ``offset``."""
    r = row[offset : offset + 21]
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
        parent_run_id=r[15],
        parent_close=r[16],
        depth=r[17],
        chain_id=r[18],
        generation=r[19],
        continued_to=r[20],
    )


def event_record(row: Any) -> EventRecord:
    return EventRecord(row[0], row[1], row[2], row[3], row[4], row[5])


def signal_record(row: Any) -> SignalRecord:
    return SignalRecord(row[0], row[1], row[2], row[3], row[4])


def task_record(row: Any, offset: int = 0) -> TaskRecord:
    """A task selected in TaskRecord field order, starting at column ``offset``."""
    return TaskRecord(*row[offset : offset + 16])


def schedule_record(row: Any, offset: int = 0) -> ScheduleRecord:
    """A schedule selected in ScheduleRecord field order, starting at column ``offset``."""
    return ScheduleRecord(*row[offset : offset + 14])
