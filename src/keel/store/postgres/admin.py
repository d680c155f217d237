"""Operator actions on PostgreSQL (:class:`~keel.store.ports.RunAdmin`).

Each action is one explicit transaction on a pooled connection that first
locks the run's row (``FOR UPDATE``): a worker's fenced commit of that run
waits for it, then finds its lease gone and writes nothing.
"""

from __future__ import annotations

import builtins
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from keel.core.states import RunState
from keel.errors import (
    KeelError,
    RunCancellingError,
    RunExistsError,
    RunFinishedError,
    RunNotFoundError,
    RunNotStuckError,
)
from keel.store._checks import (
    check_append,
    check_bulk,
    check_forks,
    check_idle_for,
    check_move,
    check_prune,
    timers_to_fire,
)
from keel.store._pages import page_of
from keel.store.base import BulkAct, BulkPage, NewEvent, NewFork, NewRun, RunRecord, RunWhere
from keel.store.postgres._pool import Conn
from keel.store.postgres._pool import run as execute
from keel.store.postgres._sql import DICT, EVENT, RUN, Q
from keel.store.postgres.database import PgDatabase
from keel.store.postgres.reads import list_query

#: How many links of a continue-as-new chain an action follows to its live run.
_CHAIN_HOPS = 10_000


@dataclass
class PgAdmin:
    """Terminate, resume, fork and prune, in a :class:`PgDatabase`."""

    db: PgDatabase

    async def terminate(self, run_id: str, event: NewEvent) -> RunRecord:
        async with self.db.pool.connection() as conn, conn.transaction():
            return await self._terminate(conn, run_id, event)

    async def resume(
        self,
        run_id: str,
        *,
        idle_for: float | None,
        append: Sequence[NewEvent] = (),
        at_seq: int | None = None,
    ) -> RunRecord:
        check_idle_for(idle_for)
        async with self.db.pool.connection() as conn, conn.transaction():
            return await self._resume(conn, run_id, idle_for, append, at_seq)

    async def bulk(
        self,
        act: BulkAct,
        *,
        run_ids: Sequence[str] | None = None,
        where: RunWhere | None = None,
        after: str | None = None,
        limit: int = 200,
    ) -> BulkPage:
        ids, filters = check_bulk(act, run_ids, where, limit)
        async with self.db.pool.connection() as conn, conn.transaction():
            cursor = None
            if ids is None:
                query, params = list_query(filters, limit, after)
                page = page_of(await execute(conn, query, params, RUN, prepare=False), limit)
                ids, cursor = [r.run_id for r in page.runs], page.next_cursor
            done: list[RunRecord] = []
            refused: list[tuple[str, KeelError]] = []
            for run_id in ids:
                try:
                    # A savepoint: a refusal undoes only its own run's writes.
                    async with conn.transaction():
                        done.append(await self._act(conn, act, run_id))
                except KeelError as exc:
                    refused.append((run_id, exc))
            return BulkPage(done, refused, cursor)

    async def _act(self, conn: Conn, act: BulkAct, run_id: str) -> RunRecord:
        """One run of a bulk page, as the single-run action does it."""
        if act.action == "terminate":
            assert act.event is not None
            return await self._terminate(conn, run_id, act.event)
        if act.action == "resume":
            return await self._resume(conn, run_id, act.idle_for, None if act.fire_timers else ())
        assert act.event is not None
        ev = act.event
        params = {
            "run_id": run_id,
            "type": ev.type,
            "command": ev.command,
            "data": ev.data,
            "channel": self.db.channel,
        }
        # As runs.request_cancel, on this transaction's connection: a continued
        # run forwards the request to its chain's live tip.
        target = run_id
        for _ in range(_CHAIN_HOPS):
            if await execute(conn, Q["request_cancel"], params | {"run_id": target}, DICT):
                return await _get(conn, target)
            tips = await execute(conn, Q["chain_tip"], {"run_id": target}, DICT)
            if not tips:
                raise RunNotFoundError(run_id)
            tip, state = tips[0]["run_id"], RunState(tips[0]["state"])
            if state.is_terminal:
                raise RunFinishedError(tip, state.value, "cancel")
            target = str(tip)
        raise RunNotFoundError(run_id)

    async def _terminate(self, conn: Conn, run_id: str, event: NewEvent) -> RunRecord:
        row = await _lock_tip(conn, run_id, "terminate")
        target = row["run_id"]
        check_move(target, RunState(row["state"]), RunState.TERMINATED)
        appended = {
            "run_id": target,
            "seq": row["next_seq"],
            "type": event.type,
            "command": event.command,
            "data": event.data,
            "now": row["now"],
        }
        await execute(conn, Q["append_event"], appended, DICT)
        params = {"run_id": target, "channel": self.db.channel}
        await execute(conn, Q["terminate_run"], params, DICT)
        return await _get(conn, target)

    async def _resume(
        self,
        conn: Conn,
        run_id: str,
        idle_for: float | None,
        append: Sequence[NewEvent] | None,
        at_seq: int | None = None,
    ) -> RunRecord:
        """``resume`` in ``conn``'s transaction; ``append=None``: fire the run's
        pending timers (its journal read here, under the row lock)."""
        row = await _lock_tip(conn, run_id, "resume")
        target, now = row["run_id"], row["now"]
        if append is None:
            journal = await execute(
                conn, Q["load_events"], {"run_id": target, "after_seq": -1}, EVENT
            )
            append, at_seq = timers_to_fire(journal), row["next_seq"]
        if row["cancel_requested"] and row["delivered"]:
            raise RunCancellingError(target, "resume")
        state = RunState(row["state"])
        if state is RunState.RUNNING:
            expires = row["lease_expires_at"]
            idle = now - row["updated_at"]
            expired = expires is not None and expires < now
            if not expired and idle_for is not None and idle < idle_for:
                raise RunNotStuckError(
                    target,
                    f"{row['lease_owner']!r} holds its lease and wrote to it "
                    f"{idle:.1f}s ago (less than {idle_for:g}s)",
                )
            check_move(target, state, RunState.SUSPENDED)
        check_append(target, row["next_seq"], append, at_seq)
        for i, e in enumerate(append):
            appended = {
                "run_id": target,
                "seq": row["next_seq"] + i,
                "type": e.type,
                "command": e.command,
                "data": e.data,
                "now": now,
            }
            await execute(conn, Q["append_event"], appended, DICT)
        params = {"run_id": target, "channel": self.db.channel, "appended": len(append)}
        await execute(conn, Q["resume_run"], params, DICT)
        return await _get(conn, target)

    async def fork(
        self, run: NewRun, journal: Sequence[NewEvent], *, redeliver_signals: bool
    ) -> RunRecord:
        fork = NewFork(run, journal, redeliver_signals)
        [point] = check_forks([fork])
        async with self.db.pool.connection() as conn, conn.transaction():
            return await self._fork(conn, fork, point)

    async def fork_many(self, forks: Sequence[NewFork]) -> BulkPage:
        points = check_forks(forks)
        done: list[RunRecord] = []
        refused: list[tuple[str, KeelError]] = []
        async with self.db.pool.connection() as conn, conn.transaction():
            for fork, point in zip(forks, points, strict=True):
                try:
                    async with conn.transaction():  # a savepoint: a refusal writes nothing
                        done.append(await self._fork(conn, fork, point))
                except KeelError as exc:
                    refused.append((point[0], exc))
        return BulkPage(done, refused, None)

    async def _fork(self, conn: Conn, fork: NewFork, point: tuple[str, int]) -> RunRecord:
        source, fork_seq = point
        run, journal = fork.run, fork.journal
        params: dict[str, Any] = {
            "run_id": run.run_id,
            "workflow": run.workflow,
            "version": run.version,
            "input": run.input,
            "forked_from": source,
            "fork_seq": fork_seq,
            "started_type": run.started.type,
            "started_data": run.started.data,
            "types": [e.type for e in journal],
            "commands": [e.command for e in journal],
            "datas": [e.data for e in journal],
            "redeliver": fork.redeliver_signals,
            "channel": self.db.channel,
        }
        # Held until the commit: a prune cannot delete the original meanwhile.
        if not await execute(conn, Q["lock_source"], {"run_id": source}, DICT):
            raise RunNotFoundError(source)
        if not await execute(conn, Q["fork_run"], params, DICT):
            raise RunExistsError([run.run_id])
        return await _get(conn, run.run_id)

    async def forks(self, run_id: str) -> builtins.list[RunRecord]:
        rows: list[RunRecord] = await self.db.fetch(Q["forks"], {"run_id": run_id}, RUN)
        return rows

    async def prune(
        self,
        *,
        ended_before: float,
        states: Collection[RunState] | None = None,
        limit: int = 500,
        dry_run: bool = False,
    ) -> int:
        wanted = check_prune(ended_before, states, limit)
        params = {
            "before": ended_before,
            "states": sorted(s.value for s in wanted),
            "limit": limit,
        }
        query = Q["count_prunable"] if dry_run else Q["prune_runs"]
        rows = await self.db.fetch(query, params, DICT)
        return int(rows[0]["n"])


async def _lock_tip(conn: Conn, run_id: str, action: str) -> dict[str, Any]:
    """The locked row of the live run an action on ``run_id`` reaches (the run, or
    the live tip of its continue-as-new chain); raises if there is none."""
    target = run_id
    for _ in range(_CHAIN_HOPS):
        rows = await execute(conn, Q["lock_live_run"], {"run_id": target}, DICT)
        if not rows:
            raise RunNotFoundError(run_id)
        row: dict[str, Any] = rows[0]
        state = RunState(row["state"])
        if state is RunState.CONTINUED and row["continued_to"] is not None:
            target = row["continued_to"]
            continue
        if state.is_terminal:
            raise RunFinishedError(target, state.value, action)
        return row
    raise RunNotFoundError(run_id)


async def _get(conn: Conn, run_id: str) -> RunRecord:
    rows: list[RunRecord] = await execute(conn, Q.sql("get_runs", "one"), {"run_id": run_id}, RUN)
    if not rows:
        raise RunNotFoundError(run_id)
    return rows[0]
