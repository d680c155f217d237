"""Reads for people and tools on SQLite (:class:`keel.store.ports.OperatorReads`),
served by the reader connection from a WAL snapshot."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection
from typing import Unpack

from keel.core.states import RunState
from keel.store._pages import (
    check_sort,
    keyset,
    page_of,
    sorted_keyset,
    sorts_out_every_run,
    where_filter,
)
from keel.store.base import (
    EventRecord,
    RunFilter,
    RunPage,
    RunRecord,
    RunSort,
    RunStats,
    RunWhere,
)
from keel.store.facts import resolved
from keel.store.sqlite._db import Capability
from keel.store.sqlite._rows import event_record, run_record
from keel.store.sqlite._sql import Q
from keel.store.sqlite.facts import SQLiteFacts


class SQLiteReads(Capability):
    """:class:`~keel.store.ports.OperatorReads` of :class:`~keel.store.sqlite.store.SQLiteStore`."""

    async def get_run(self, run_id: str) -> RunRecord | None:
        return await self._db.read_one(Q["get_run"], (run_id,), run_record)

    async def get_runs(self, run_ids: Collection[str]) -> dict[str, RunRecord]:
        if not run_ids:
            return {}
        ids = json.dumps(sorted(set(run_ids)))
        runs = await self._db.read_all(Q["get_runs"], (ids,), run_record)
        return {run.run_id: run for run in runs}

    async def list_runs(
        self,
        *,
        limit: int = 50,
        cursor: str | None = None,
        oldest_first: bool = False,
        sort: RunSort = "created",
        **where: Unpack[RunWhere],
    ) -> RunPage:
        check_sort(sort)
        selected = where_filter(where)
        query, params = list_query(selected, limit, cursor, oldest_first=oldest_first, sort=sort)
        if sorts_out_every_run(sort, selected):
            return RunPage([], None)
        return page_of(await self._db.read_all(query, params, run_record), limit, sort)

    async def count_runs(self, **where: Unpack[RunWhere]) -> int:
        params = _filter_params(where_filter(where))
        return await self._db.read(
            lambda conn: int(conn.execute(Q["count_runs"], params).fetchone()["n"])
        )

    async def count_runs_by_state(self, **where: Unpack[RunWhere]) -> dict[RunState, int]:
        params = _filter_params(where_filter(where))

        def count(conn: sqlite3.Connection) -> dict[RunState, int]:
            rows = conn.execute(Q["count_runs_by_state"], params).fetchall()
            return {RunState(row["state"]): int(row["n"]) for row in rows}

        return await self._db.read(count)

    async def history(self, run_id: str, *, after_seq: int = -1) -> list[EventRecord]:
        events = await self._db.read_all(Q["load_events"], (run_id, after_seq), event_record)
        return await resolved(events, SQLiteFacts(self._db).load_many)

    async def first_event(self, run_id: str) -> EventRecord | None:
        return await self._db.read_one(Q["first_event"], (run_id,), event_record)

    async def run_stats(self) -> RunStats:
        now = self._db.clock()

        def read(conn: sqlite3.Connection) -> RunStats:
            by_state = dict.fromkeys(RunState, 0)
            for row in conn.execute(Q["runs_by_state"]):
                by_state[RunState(row["state"])] = int(row["n"])
            due = conn.execute(Q["oldest_due"], {"now": now}).fetchone()["due"]
            return RunStats(by_state, None if due is None else float(due), now)

        return await self._db.read(read)


def list_query(
    filters: RunFilter,
    limit: int,
    cursor: str | None,
    *,
    oldest_first: bool = False,
    sort: RunSort = "created",
) -> tuple[str, dict[str, object]]:
    """The query and parameters of one ``list_runs`` page (``limit + 1`` rows)."""
    if sort != "created":
        params = _filter_params(filters) | sorted_keyset(
            sort, limit, cursor, ascending=oldest_first
        )
        name = f"list_runs_{sort}"
        return (Q[name + "_oldest"] if oldest_first else Q[name]), params
    params = _filter_params(filters) | keyset(
        limit, cursor, oldest_first=oldest_first, where=filters
    )
    if len(filters.states) == 1:  # failed runs among a million: the runs_state index
        params["state"] = filters.states[0].value
        name = "list_runs_by_state"
    elif len(filters.workflows) == 1:
        name = "list_runs_by_workflow"
    else:
        name = "list_runs"
    return (Q[name + "_oldest"] if oldest_first else Q[name]), params


def _filter_params(where: RunFilter) -> dict[str, object]:
    """The parameters of a :class:`RunFilter` in the list and count queries."""
    return {
        "workflow": where.workflows[0] if where.workflows else None,
        "workflows": json.dumps(where.workflows) if where.workflows else None,
        "states": json.dumps([str(s) for s in where.states]) if where.states else None,
        "since": where.since,
        "until": where.until,
        "parent_run_id": where.parent_run_id,
    }
