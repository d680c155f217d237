"""The in-memory store's operator reads (:class:`~keel.store.ports.OperatorReads`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from typing import Unpack

from keel.core.states import RunState
from keel.store._pages import (
    check_limit,
    check_sort,
    decode_cursor,
    page_of,
    sort_key,
    sorted_mark,
    where_filter,
)
from keel.store.base import EventRecord, RunPage, RunRecord, RunSort, RunStats, RunWhere
from keel.store.facts import resolved
from keel.store.memory.facts import MemoryFacts
from keel.store.memory.tables import Tables


class MemoryReads:
    """Runs, pages and counts of runs, and journals, over the store's :class:`Tables`."""

    def __init__(self, tables: Tables) -> None:
        self._t = tables
        self._facts = MemoryFacts(tables)  # journal rows may reference facts

    async def get_run(self, run_id: str) -> RunRecord | None:
        with self._t.transaction():
            return self._t.runs.get(run_id)

    async def get_runs(self, run_ids: Collection[str]) -> dict[str, RunRecord]:
        with self._t.transaction():
            return {i: self._t.runs[i] for i in run_ids if i in self._t.runs}

    async def list_runs(
        self,
        *,
        limit: int = 50,
        cursor: str | None = None,
        oldest_first: bool = False,
        sort: RunSort = "created",
        **where: Unpack[RunWhere],
    ) -> RunPage:
        check_limit(limit)
        check_sort(sort)
        selected = where_filter(where)
        mark: tuple[str | float, ...] | None = None
        if cursor and sort == "created":
            mark = decode_cursor(cursor)
        elif cursor:
            mark = sorted_mark(sort, cursor)

        def listed(run: RunRecord) -> bool:
            if sort == "ended" and not run.state.is_terminal:
                return False
            if mark is None:
                return True
            key = sort_key(sort, run)
            return key > mark if oldest_first else key < mark

        with self._t.transaction():
            runs = [r for r in self._t.runs.values() if selected.matches(r) and listed(r)]
        runs.sort(key=lambda r: sort_key(sort, r), reverse=not oldest_first)
        return page_of(runs[: limit + 1], limit, sort)

    async def count_runs(self, **where: Unpack[RunWhere]) -> int:
        selected = where_filter(where)
        with self._t.transaction():
            return sum(1 for r in self._t.runs.values() if selected.matches(r))

    async def count_runs_by_state(self, **where: Unpack[RunWhere]) -> dict[RunState, int]:
        selected = where_filter(where)
        with self._t.transaction():
            counts = Counter(r.state for r in self._t.runs.values() if selected.matches(r))
        return dict(counts)

    async def history(self, run_id: str, *, after_seq: int = -1) -> list[EventRecord]:
        with self._t.transaction():
            events = [e for e in self._t.events.get(run_id, ()) if e.seq > after_seq]
        return await resolved(events, self._facts.load_many)

    async def first_event(self, run_id: str) -> EventRecord | None:
        with self._t.transaction():
            events = self._t.events.get(run_id)
            return events[0] if events else None

    async def run_stats(self) -> RunStats:
        by_state = dict.fromkeys(RunState, 0)
        due: list[float] = []
        with self._t.transaction() as now:
            for r in self._t.runs.values():
                by_state[r.state] += 1
                waiting = r.state in (RunState.PENDING, RunState.SUSPENDED)
                if waiting and r.wake_at is not None and r.wake_at <= now:
                    due.append(r.wake_at)
                expiry = r.lease_expires_at if r.state is RunState.RUNNING else None
                if expiry is not None and expiry < now:
                    due.append(expiry)
        return RunStats(by_state, min(due, default=None), now)
