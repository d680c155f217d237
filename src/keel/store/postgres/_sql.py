"""The SQL that ships next to this module, and the records its rows make (by column name).

``queries.sql`` holds named pieces. A piece may include another as ``{name}``
and may hold sections (a line ``--[tag ...`` to a line ``--]``) that only the
variants asked for with one of those tags keep: see :meth:`Queries.sql`.
"""

from __future__ import annotations

import dataclasses
import operator
import re
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

from psycopg import AsyncCursor
from psycopg.rows import BaseRowFactory, RowMaker, class_row, dict_row, kwargs_row

from keel.core.states import RunState
from keel.store import base
from keel.store._sqlfiles import SqlFiles

FILES = SqlFiles("keel.store.postgres", "PostgreSQL")

_INCLUDE = re.compile(r"\{(\w+)\}")
_OPEN = "--["
_CLOSE = "--]"


class Queries:
    """The pieces of ``queries.sql``, their includes expanded, by name and tags."""

    def __init__(self, pieces: dict[str, str]) -> None:
        self._pieces = {name: _trimmed(text) for name, text in pieces.items()}

    def __getitem__(self, name: str) -> str:
        return self.sql(name)

    @cache  # noqa: B019 - one instance per process, living as long as it
    def sql(self, name: str, *tags: str) -> str:
        """Piece ``name`` with its includes expanded, keeping the sections of ``tags``."""
        wanted = set(tags)
        known: set[str] = set()
        kept: list[str] = []
        section: set[str] | None = None
        for line in self._expand(name).splitlines():
            if line.startswith(_OPEN):
                if section is not None:
                    raise RuntimeError(f"queries.sql: {name}: a section opens inside another")
                section = set(line[len(_OPEN) :].split())
                known |= section
            elif line.startswith(_CLOSE):
                section = None
            elif section is None or section & wanted:
                kept.append(line)
        if section is not None or not wanted <= known:
            raise RuntimeError(f"queries.sql: {name}: unclosed section or unknown tags {tags}")
        return "\n".join(kept)

    def _expand(self, name: str, seen: tuple[str, ...] = ()) -> str:
        """Piece ``name`` with ``{piece}`` replaced by that piece (outside comments)."""
        if name in seen:
            raise RuntimeError(f"queries.sql: {' -> '.join(seen)} includes itself")

        def include(match: re.Match[str]) -> str:
            piece = self._expand(match.group(1), (*seen, name))
            lines = [ln for ln in piece.splitlines() if ln.strip() and not _is_comment(ln)]
            # A comment at its end must not swallow what follows it on the line.
            return "\n".join(lines) + ("\n" if "--" in lines[-1] else "")

        return "\n".join(
            line if _is_comment(line) else _INCLUDE.sub(include, line)
            for line in self._pieces[name].splitlines()
        )


def _trimmed(text: str) -> str:
    """A piece without the comments after it (a heading of what follows) or its ``;``."""
    lines = text.splitlines()
    while lines and (not lines[-1].strip() or _is_comment(lines[-1])):
        lines.pop()
    return "\n".join(lines).removesuffix(";")


def _is_comment(line: str) -> bool:
    """A line of comment only (a section mark is not one)."""
    text = line.lstrip()
    return text.startswith("--") and not text.startswith((_OPEN, _CLOSE))


Q = Queries(FILES.queries)


latest_version = FILES.latest_version  # the schema version this code creates and understands
schema_script = FILES.schema_script  # schema.sql, for reference and tests


def migrations() -> tuple[tuple[int, str], ...]:
    """``(version, script)`` of every file in ``migrations/``, in version order."""
    return FILES.migrations


# -- rows to records, by column name ----------------------------------------------------


def run_record(**columns: Any) -> base.RunRecord:
    """A run from the columns of the ``run_row`` piece (its state as a :class:`RunState`)."""
    columns["state"] = RunState(columns["state"])
    return base.RunRecord(**columns)


def fields(record: Any) -> dict[str, Any]:
    """A record's fields by name: the parameters of statements that name them alike."""
    names = _FIELDS.get(type(record))
    if names is None:
        names = _FIELDS[type(record)] = tuple(f.name for f in dataclasses.fields(record))
    return {name: getattr(record, name) for name in names}


_FIELDS: dict[type, tuple[str, ...]] = {}  # the field names of each record class


def without(row: dict[str, Any], *names: str) -> dict[str, Any]:
    """``row`` less ``names`` (the extra columns, such as a claim's clock)."""
    return {k: v for k, v in row.items() if k not in names}


Row = BaseRowFactory[Any]
DICT: Row = dict_row
RUN: Row = kwargs_row(run_record)


def record_row(cls: type[Any]) -> Row:
    """Rows of ``cls`` by column name, like psycopg's ``class_row``, but the names
    are matched to the fields once per query and each row is built positionally
    (``class_row`` builds a keyword dict per row: ~10% of loading a long journal).
    A query that lacks one of the fields falls back to ``class_row``."""
    fields = [f.name for f in dataclasses.fields(cls)]
    by_kwargs = class_row(cls)

    def factory(cursor: AsyncCursor[Any]) -> RowMaker[Any]:
        names = [column.name for column in cursor.description or ()]
        if not set(fields) <= set(names):
            return by_kwargs(cursor)
        if len(fields) == 1:
            index = names.index(fields[0])
            return lambda values: cls(values[index])
        pick: Callable[[Sequence[Any]], tuple[Any, ...]] = operator.itemgetter(
            *(names.index(name) for name in fields)
        )
        return lambda values: cls(*pick(values))

    return factory  # type: ignore[return-value]


EVENT: Row = record_row(base.EventRecord)
SIGNAL: Row = class_row(base.SignalRecord)
SNAPSHOT: Row = class_row(base.SnapshotRecord)
TASK: Row = class_row(base.TaskRecord)
QUEUE: Row = class_row(base.QueueInfo)
SCHEDULE: Row = class_row(base.ScheduleRecord)
WORKER_VERSION: Row = class_row(base.WorkerVersion)
