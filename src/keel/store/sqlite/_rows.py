"""Rows mapped to records by column name, and records to named query parameters."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable
from functools import cache
from operator import itemgetter
from typing import TYPE_CHECKING, Any, TypeVar

import keel.store.base as base
from keel.core.states import RunState

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

R = TypeVar("R", bound="DataclassInstance")


@cache
def _field_names(cls: type[DataclassInstance]) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def reader(cls: type[R], **stored_as: Callable[[Any], Any]) -> Callable[[sqlite3.Row], R]:
    """The function making a ``cls`` (a record dataclass) of a row, each field from
    the column of its name.

    Every record's field names are its table's column names (or the query's
    aliases); columns the record does not hold are ignored. ``stored_as`` maps
    a field to the function that turns its stored value into the record's.
    """
    names = _field_names(cls)
    converted = [(names.index(name), convert) for name, convert in stored_as.items()]
    # Per set of column names: a getter of the record's fields in one C call
    # (sqlite3.Row looks a name up by scanning the columns).
    getters: dict[tuple[str, ...], Callable[[sqlite3.Row], tuple[Any, ...]]] = {}

    def make(row: sqlite3.Row) -> R:
        columns = tuple(row.keys())
        getter = getters.get(columns)
        if getter is None:
            getter = getters[columns] = itemgetter(*(columns.index(n) for n in names))
        values = getter(row)
        if converted:
            values = list(values)
            for i, convert in converted:
                values[i] = convert(values[i])
        return cls(*values)

    return make


def params_of(value: DataclassInstance) -> dict[str, Any]:
    """The fields of ``value`` (a ``New...`` record) as named query parameters."""
    return {name: getattr(value, name) for name in _field_names(type(value))}


#: ``runs`` rows (``state`` is stored as text, ``cancel_requested`` as 0/1).
run_record = reader(base.RunRecord, state=RunState, cancel_requested=bool)
#: ``schedules`` rows (``paused`` is stored as 0/1).
schedule_record = reader(base.ScheduleRecord, paused=bool)
event_record = reader(base.EventRecord)
signal_record = reader(base.SignalRecord)
task_record = reader(base.TaskRecord)
snapshot_record = reader(base.SnapshotRecord)
queue_info = reader(base.QueueInfo)
worker_version = reader(base.WorkerVersion)
