"""Rows mapped to records by column name, and records to named query parameters."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable
from functools import cache
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import keel.store.base as base
from keel.core.states import RunState

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

R = TypeVar("R", bound="DataclassInstance")


@cache
def _field_names(cls: type[DataclassInstance]) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


class Reader(Generic[R]):
    """Makes records ``cls`` (a dataclass) of a query's rows, each field from the
    column of its name.

    Every record's field names are its table's column names (or the query's
    aliases); columns the record does not hold are ignored. ``stored_as`` maps
    a field to the function that turns its stored value into the record's.
    The names are read from the cursor's description once per query, so rows
    are taken as plain tuples (journals of thousands of rows are read whole).
    """

    def __init__(self, cls: type[R], **stored_as: Callable[[Any], Any]) -> None:
        self._cls = cls
        self._names = _field_names(cls)
        self._converted = [(self._names.index(n), f) for n, f in stored_as.items()]
        self._getters: dict[tuple[str, ...], Callable[[Any], tuple[Any, ...]]] = {}

    def one(self, cursor: sqlite3.Cursor) -> R | None:
        """The record of the cursor's next row, or ``None`` if there is none."""
        make = self._maker(cursor)
        row = cursor.fetchone()
        return None if row is None else make(row)

    def all(self, cursor: sqlite3.Cursor) -> list[R]:
        """The records of the cursor's rows, in order."""
        return list(map(self._maker(cursor), cursor))

    def _maker(self, cursor: sqlite3.Cursor) -> Callable[[tuple[Any, ...]], R]:
        cursor.row_factory = None  # tuples: the getter below knows the column of each field
        columns = tuple(d[0] for d in cursor.description)
        getter = self._getters.get(columns)
        if getter is None:
            getter = itemgetter(*(columns.index(name) for name in self._names))
            self._getters[columns] = getter
        cls, converted = self._cls, self._converted
        if not converted:
            return lambda row: cls(*getter(row))

        def make(row: tuple[Any, ...]) -> R:
            values = list(getter(row))
            for i, convert in converted:
                values[i] = convert(values[i])
            return cls(*values)

        return make


def params_of(value: DataclassInstance) -> dict[str, Any]:
    """The fields of ``value`` (a ``New...`` record) as named query parameters."""
    return {name: getattr(value, name) for name in _field_names(type(value))}


#: ``runs`` rows (``state`` is stored as text, ``cancel_requested`` as 0/1).
run_record = Reader(base.RunRecord, state=RunState, cancel_requested=bool)
#: ``schedules`` rows (``paused`` is stored as 0/1).
schedule_record = Reader(base.ScheduleRecord, paused=bool)
event_record = Reader(base.EventRecord)
signal_record = Reader(base.SignalRecord)
task_record = Reader(base.TaskRecord)
snapshot_record = Reader(base.SnapshotRecord)
queue_info = Reader(base.QueueInfo)
worker_version = Reader(base.WorkerVersion)
