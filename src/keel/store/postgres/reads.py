"""Operator reads on PostgreSQL: runs, pages and counts of runs, journals
(:class:`~keel.store.ports.OperatorReads`)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Unpack

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
from keel.store.postgres._sql import DICT, EVENT, RUN, Q
from keel.store.postgres.database import PgDatabase
from keel.store.postgres.facts import PgFacts


@dataclass
class PgReads:
    """Reads for people and tools, in a :class:`PgDatabase`."""

    db: PgDatabase

    async def get_run(self, run_id: str) -> RunRecord | None:
        return await fetch_run(self.db, run_id)

    async def get_runs(self, run_ids: Collection[str]) -> dict[str, RunRecord]:
        return await fetch_runs(self.db, run_ids) if run_ids else {}

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
        return page_of(await self.db.fetch(query, params, RUN, prepare=False), limit, sort)

    async def count_runs(self, **where: Unpack[RunWhere]) -> int:
        params = _filter(where_filter(where))
        rows = await self.db.fetch(Q["count_runs"], params, DICT, prepare=False)
        return int(rows[0]["n"])

    async def count_runs_by_state(self, **where: Unpack[RunWhere]) -> dict[RunState, int]:
        params = _filter(where_filter(where))
        rows = await self.db.fetch(Q["count_runs_by_state"], params, DICT, prepare=False)
        return {RunState(row["state"]): int(row["n"]) for row in rows}

    async def history(self, run_id: str, *, after_seq: int = -1) -> list[EventRecord]:
        params = {"run_id": run_id, "after_seq": after_seq}
        events = await self.db.fetch(Q["load_events"], params, EVENT)
        return await resolved(events, PgFacts(self.db).load_many)

    async def first_event(self, run_id: str) -> EventRecord | None:
        rows: list[EventRecord] = await self.db.fetch(Q["first_event"], {"run_id": run_id}, EVENT)
        return rows[0] if rows else None

    async def run_stats(self) -> RunStats:
        rows = await self.db.fetch(Q["run_stats"], {}, DICT)
        by_state = dict.fromkeys(RunState, 0)
        for row in rows:
            if row["state"] is not None:  # no runs at all: one row of NULLs
                by_state[RunState(row["state"])] = int(row["n"])
        due = rows[0]["oldest_due"]
        return RunStats(by_state, None if due is None else float(due), float(rows[0]["now"]))


async def fetch_run(db: PgDatabase, run_id: str) -> RunRecord | None:
    """The row of run ``run_id``, if it exists."""
    rows: list[RunRecord] = await db.fetch(Q.sql("get_runs", "one"), {"run_id": run_id}, RUN)
    return rows[0] if rows else None


async def fetch_runs(db: PgDatabase, run_ids: Collection[str]) -> dict[str, RunRecord]:
    """The rows of those of ``run_ids`` that exist, by run id."""
    params = {"run_ids": sorted(set(run_ids))}
    rows: list[RunRecord] = await db.fetch(Q.sql("get_runs", "many"), params, RUN)
    return {run.run_id: run for run in rows}


def list_query(
    selected: RunFilter,
    limit: int,
    cursor: str | None,
    *,
    oldest_first: bool = False,
    sort: RunSort = "created",
) -> tuple[str, dict[str, Any]]:
    """The query and parameters of one ``list_runs`` page (``limit + 1`` rows: one
    more than the page tells whether another page exists)."""
    name = "list_runs"
    if sort == "created":
        params = _filter(selected) | keyset(
            limit, cursor, oldest_first=oldest_first, where=selected
        )
        tags = ["oldest" if oldest_first else "newest"]
    else:
        name = "list_runs_sorted"
        params = _filter(selected) | sorted_keyset(sort, limit, cursor, ascending=oldest_first)
        tags = [f"{sort}_{'asc' if oldest_first else 'desc'}"]
    if len(selected.workflows) == 1:  # walks the runs_workflow index
        params |= {"workflow": selected.workflows[0], "workflows": None}
        tags.append("one_workflow")
    if len(selected.states) == 1:  # can walk the runs_state index
        params |= {"state": str(selected.states[0]), "states": None}
        tags.append("one_state")
    return Q.sql(name, *tags), params


def _filter(where: RunFilter) -> dict[str, Any]:
    """The parameters of the ``run_filter`` piece."""
    return {
        "workflows": list(where.workflows) or None,
        "states": [str(s) for s in where.states] or None,
        "since": where.since,
        "until": where.until,
        "parent_run_id": where.parent_run_id,
    }
