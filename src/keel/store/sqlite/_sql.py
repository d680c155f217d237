"""The SQL that ships next to this module, and rows mapped to records by column name."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

from keel.core.states import RunState
from keel.store._sqlfiles import SqlFiles
from keel.store.base import RunRecord, ScheduleRecord

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

FILES = SqlFiles("keel.store.sqlite", "SQLite")
#: The named queries of ``queries.sql``.
Q = FILES.queries


latest_version = FILES.latest_version
schema_script = FILES.schema_script


def queries() -> dict[str, str]:
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


R = TypeVar("R", bound="DataclassInstance")


@cache
def _field_names(cls: type[DataclassInstance]) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def record(cls: type[R], row: sqlite3.Row, **stored_as: Callable[[Any], Any]) -> R:
    """The record ``cls`` (a dataclass) of ``row``: each field from the column of its name.

    Every record's field names are its table's column names (or the query's
    aliases); columns the record does not hold are ignored. ``stored_as`` maps
    a field to the function that turns its stored value into the record's.
    """
    values = {name: row[name] for name in _field_names(cls)}
    for name, convert in stored_as.items():
        values[name] = convert(values[name])
    return cls(**values)


def params_of(value: DataclassInstance) -> dict[str, Any]:
    """The fields of ``value`` (a ``New...`` record) as named query parameters."""
    return {name: getattr(value, name) for name in _field_names(type(value))}


def run_record(row: sqlite3.Row) -> RunRecord:
    """A ``runs`` row (``state`` is stored as text, ``cancel_requested`` as 0/1)."""
    return record(RunRecord, row, state=RunState, cancel_requested=bool)


def schedule_record(row: sqlite3.Row) -> ScheduleRecord:
    """A ``schedules`` row (``paused`` is stored as 0/1)."""
    return record(ScheduleRecord, row, paused=bool)
