"""Operator actions on SQLite (:class:`keel.store.ports.RunAdmin`).

Each is one function of the writer connection, run inside the writer's
``BEGIN IMMEDIATE`` transaction: the checks and the writes see and change the
same state, and a failure part-way rolls all of it back.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
from collections.abc import Collection, Sequence

import keel.store.base as base
from keel.core.states import RunState
from keel.errors import (
    KeelError,
    RunCancellingError,
    RunExistsError,
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
from keel.store.sqlite._db import Capability
from keel.store.sqlite._journal import chain_tip, close_family, insert_events, insert_run
from keel.store.sqlite._rows import event_record, run_record
from keel.store.sqlite._sql import Q
from keel.store.sqlite.reads import list_query
from keel.store.sqlite.runs import request_cancel_op


class SQLiteAdmin(Capability):
    """:class:`~keel.store.ports.RunAdmin` of :class:`~keel.store.sqlite.store.SQLiteStore`."""

    async def terminate(self, run_id: str, event: base.NewEvent) -> base.RunRecord:
        return await self._db.write(
            lambda conn: terminate_op(conn, run_id, event, self._db.clock()), notify=True
        )

    async def resume(
        self,
        run_id: str,
        *,
        idle_for: float | None,
        append: Sequence[base.NewEvent] = (),
        at_seq: int | None = None,
    ) -> base.RunRecord:
        check_idle_for(idle_for)

        def op(conn: sqlite3.Connection) -> base.RunRecord:
            return resume_op(conn, run_id, idle_for, append, at_seq, self._db.clock())

        return await self._db.write(op, notify=True)

    async def bulk(
        self,
        act: base.BulkAct,
        *,
        run_ids: Sequence[str] | None = None,
        where: base.RunWhere | None = None,
        after: str | None = None,
        limit: int = 200,
    ) -> base.BulkPage:
        ids, filters = check_bulk(act, run_ids, where, limit)
        listed = None if ids is not None else list_query(filters, limit, after)

        def op(conn: sqlite3.Connection) -> base.BulkPage:
            now = self._db.clock()
            cursor = None
            todo = ids
            if listed is not None:
                page = page_of(run_record.all(conn.execute(*listed)), limit)
                todo, cursor = [r.run_id for r in page.runs], page.next_cursor
            done: list[base.RunRecord] = []
            refused: list[tuple[str, KeelError]] = []
            for run_id in todo or ():
                # A refusal undoes only its own run's writes; the page goes on.
                conn.execute("SAVEPOINT bulk_run")
                try:
                    done.append(_act(conn, act, run_id, now))
                except KeelError as exc:
                    conn.execute("ROLLBACK TO bulk_run")
                    refused.append((run_id, exc))
                conn.execute("RELEASE bulk_run")
            return base.BulkPage(done, refused, cursor)

        return await self._db.write(op, notify=True)

    async def fork(
        self, run: base.NewRun, journal: Sequence[base.NewEvent], *, redeliver_signals: bool
    ) -> base.RunRecord:
        fork = base.NewFork(run, journal, redeliver_signals)
        [point] = check_forks([fork])
        return await self._db.write(
            lambda conn: fork_op(conn, fork, point, self._db.clock()), notify=True
        )

    async def fork_many(self, forks: Sequence[base.NewFork]) -> base.BulkPage:
        points = check_forks(forks)

        def op(conn: sqlite3.Connection) -> base.BulkPage:
            now = self._db.clock()
            done: list[base.RunRecord] = []
            refused: list[tuple[str, KeelError]] = []
            for fork, point in zip(forks, points, strict=True):
                conn.execute("SAVEPOINT bulk_fork")
                try:
                    done.append(fork_op(conn, fork, point, now))
                except KeelError as exc:
                    conn.execute("ROLLBACK TO bulk_fork")
                    refused.append((point[0], exc))
                conn.execute("RELEASE bulk_fork")
            return base.BulkPage(done, refused, None)

        return await self._db.write(op, notify=True)

    async def forks(self, run_id: str) -> builtins.list[base.RunRecord]:
        return await self._db.read_all(Q["forks"], (run_id,), run_record)

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
            "states": json.dumps(sorted(s.value for s in wanted)),
            "limit": limit,
        }
        if dry_run:
            return await self._db.read(
                lambda conn: int(conn.execute(Q["count_prunable"], params).fetchone()["n"])
            )
        return await self._db.write(lambda conn: conn.execute(Q["prune_runs"], params).rowcount)


def fork_op(
    conn: sqlite3.Connection, fork: base.NewFork, point: tuple[str, int], now: float
) -> base.RunRecord:
    """``fork`` inside the writer's transaction (``point``: original, fork_seq)."""
    source, fork_seq = point
    run = fork.run
    if conn.execute(Q["run_head"], (source,)).fetchone() is None:
        raise RunNotFoundError(source)
    if insert_run(conn, run, now) is None:
        raise RunExistsError([run.run_id])
    insert_events(conn, run.run_id, 1, fork.journal, now)
    conn.execute(Q["set_next_seq"], {"run_id": run.run_id, "next_seq": 1 + len(fork.journal)})
    if fork.redeliver_signals:
        params = {"run_id": run.run_id, "source": source, "fork_seq": fork_seq}
        conn.execute(Q["redeliver_signals"], params)
    return _get(conn, run.run_id)


def terminate_op(
    conn: sqlite3.Connection, run_id: str, event: base.NewEvent, now: float
) -> base.RunRecord:
    """``terminate`` inside the writer's transaction."""
    tip = chain_tip(conn, run_id, "terminate")
    target = tip["run_id"]
    check_move(target, RunState(tip["state"]), RunState.TERMINATED)
    insert_events(conn, target, tip["next_seq"], (event,), now)
    conn.execute(Q["terminate_run"], {"run_id": target, "now": now})
    close_family(conn, target, RunState.TERMINATED, now)
    return _get(conn, target)


def resume_op(
    conn: sqlite3.Connection,
    run_id: str,
    idle_for: float | None,
    append: Sequence[base.NewEvent] | None,
    at_seq: int | None,
    now: float,
) -> base.RunRecord:
    """``resume`` inside the writer's transaction; ``append=None``: fire the
    run's pending timers (read here, in the same transaction)."""
    run = _get(conn, chain_tip(conn, run_id, "resume")["run_id"])
    if append is None:
        append = check_timers(conn, run)
        at_seq = run.next_seq
    if (
        run.cancel_requested
        and conn.execute(Q["cancel_delivered"], (run.run_id,)).fetchone()["found"]
    ):
        raise RunCancellingError(run.run_id, "resume")
    if run.state is RunState.RUNNING:
        expired = run.lease_expires_at is not None and run.lease_expires_at < now
        if not expired and idle_for is not None and now - run.updated_at < idle_for:
            raise RunNotStuckError(
                run.run_id,
                f"{run.lease_owner!r} holds its lease and wrote to it "
                f"{now - run.updated_at:.1f}s ago (less than {idle_for:g}s)",
            )
        check_move(run.run_id, run.state, RunState.SUSPENDED)
    check_append(run.run_id, run.next_seq, append, at_seq)
    if append:
        insert_events(conn, run.run_id, run.next_seq, append, now)
        params = {"run_id": run.run_id, "next_seq": run.next_seq + len(append)}
        conn.execute(Q["set_next_seq"], params)
    conn.execute(Q["resume_run"], {"run_id": run.run_id, "now": now})
    return _get(conn, run.run_id)


def check_timers(conn: sqlite3.Connection, run: base.RunRecord) -> list[base.NewEvent]:
    """The ``timer_fired`` events of ``run``'s pending sleeps."""
    return timers_to_fire(event_record.all(conn.execute(Q["load_events"], (run.run_id, -1))))


def _act(conn: sqlite3.Connection, act: base.BulkAct, run_id: str, now: float) -> base.RunRecord:
    """One run of a bulk page, as the single-run action does it."""
    if act.action == "terminate":
        assert act.event is not None
        return terminate_op(conn, run_id, act.event, now)
    if act.action == "resume":
        return resume_op(conn, run_id, act.idle_for, None if act.fire_timers else (), None, now)
    assert act.event is not None
    tip = request_cancel_op(conn, run_id, act.event, now)
    return _get(conn, tip)


def _get(conn: sqlite3.Connection, run_id: str) -> base.RunRecord:
    found = run_record.one(conn.execute(Q["get_run"], (run_id,)))
    if found is None:
        raise RunNotFoundError(run_id)
    return found
