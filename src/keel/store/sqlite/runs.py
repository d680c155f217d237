"""Runs, their journals, leases and fencing on SQLite (:class:`keel.store.ports.RunJournal`).

Every write is one function of the writer connection, run inside the writer's
``BEGIN IMMEDIATE`` transaction (shared with other writes queued at that
moment: group commit), so a failure part-way rolls back all of that write and
processes sharing the file take turns.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import keel.store.base as base
from keel.core.states import RunState
from keel.store._checks import (
    check_children,
    check_claim_limit,
    check_end,
    check_move,
    check_snapshot,
    check_tasks,
    check_ttl,
    versions_json,
)
from keel.store.ports import Committed, Finish, Turn
from keel.store.sqlite._db import Capability
from keel.store.sqlite._journal import (
    chain_tip,
    close_family,
    insert_events,
    insert_run,
    lease_next_seq,
)
from keel.store.sqlite._rows import params_of, run_record, snapshot_record
from keel.store.sqlite._sql import Q
from keel.store.sqlite._turn import write_turn


class SQLiteRuns(Capability):
    """:class:`~keel.store.ports.RunJournal` of :class:`~keel.store.sqlite.store.SQLiteStore`."""

    async def create(
        self, run: base.NewRun, *, lease_owner: str | None = None, lease_ttl: float = 30.0
    ) -> tuple[base.RunRecord, base.Lease | None, bool]:
        if lease_owner is not None:
            check_ttl(lease_ttl)

        def op(conn: sqlite3.Connection) -> tuple[base.RunRecord, base.Lease | None, bool]:
            now = self._db.clock()
            lease = None
            if lease_owner is not None:
                lease = base.Lease(run.run_id, lease_owner, 1, now + lease_ttl)
            created = insert_run(conn, run, now, lease)
            if created is None:  # it exists: nothing was written
                existing = run_record.one(conn.execute(Q["get_run"], (run.run_id,)))
                assert existing is not None
                return existing, None, False
            return created, lease, True

        return await self._db.write(op, notify=lease_owner is None)

    async def claim(
        self, owner: str, *, limit: int, ttl: float, versions: base.VersionPairs | None = None
    ) -> list[base.Claimed]:
        check_claim_limit(limit)
        check_ttl(ttl)
        having = {"versions": versions_json(versions)}

        def candidates(conn: sqlite3.Connection) -> bool:
            params = {"now": self._db.clock(), "limit": 1, **having}
            return conn.execute(Q["claim_candidates"], params).fetchone() is not None

        # Idle workers poll often: look on the reader first so that an empty
        # claim never takes the file's write lock.
        if not await self._db.read(candidates):
            return []

        def op(conn: sqlite3.Connection) -> list[base.Claimed]:
            now = self._db.clock()
            expires = now + ttl
            found = conn.execute(Q["claim_candidates"], {"now": now, "limit": limit, **having})
            claimed = []
            for candidate in found.fetchall():
                params = {
                    "owner": owner,
                    "expires_at": expires,
                    "now": now,
                    "run_id": candidate["run_id"],
                }
                run = run_record.one(conn.execute(Q["claim_run"], params))
                assert run is not None  # a candidate in this transaction
                claimed.append(
                    base.Claimed(base.Lease(run.run_id, owner, run.lease_token, expires), run)
                )
            return claimed

        return await self._db.write(op)

    async def renew(
        self, owner: str, leases: Sequence[base.Lease], ttl: float
    ) -> base.RenewOutcome:
        check_ttl(ttl)
        self._db.check_open()
        if not leases:
            return base.RenewOutcome(self._db.clock() + ttl, frozenset(), frozenset())

        def op(conn: sqlite3.Connection) -> base.RenewOutcome:
            now = self._db.clock()
            expires = now + ttl
            lost: set[str] = set()
            cancel: set[str] = set()
            for lease in leases:
                row = None
                if lease.owner == owner:
                    params = {
                        "expires_at": expires,
                        "run_id": lease.run_id,
                        "token": lease.token,
                        "owner": owner,
                        "now": now,
                    }
                    row = conn.execute(Q["renew_lease"], params).fetchone()
                if row is None:
                    lost.add(lease.run_id)
                elif row["cancel_requested"]:
                    cancel.add(lease.run_id)
            return base.RenewOutcome(expires, frozenset(lost), frozenset(cancel))

        return await self._db.write(op)

    async def commit(self, lease: base.Lease, turn: Turn) -> Committed:
        end = turn.end
        state = RunState.RUNNING if end is None else check_end(lease.run_id, end)
        if turn.children:
            check_children(turn.children)
        if turn.tasks:
            check_tasks(lease.run_id, turn.tasks)

        def op(conn: sqlite3.Connection) -> tuple[list[int], bool]:
            return write_turn(conn, lease, turn, state, self._db.clock())

        task_ids, woke = await self._db.write(op)
        # Wake this process's waiters as the change deserves: a suspended run may
        # be due at once; a finished one is news to result waiters, and to claim
        # loops only if it made its parent or children due.
        if isinstance(end, Finish):
            self._db.waiters.notify(work=woke or bool(turn.children))
        elif end is not None or turn.children or turn.tasks:
            self._db.waiters.notify()
        return Committed(task_ids)

    async def request_cancel(self, run_id: str, cancelled_event: base.NewEvent) -> RunState:
        def op(conn: sqlite3.Connection) -> RunState:
            tip = request_cancel_op(conn, run_id, cancelled_event, self._db.clock())
            return RunState(conn.execute(Q["run_head"], (tip,)).fetchone()["state"])

        return await self._db.write(op, notify=True)

    async def save_snapshot(self, lease: base.Lease, snapshot: base.NewSnapshot) -> None:
        await self._db.write(lambda conn: save_snapshot_op(conn, lease, snapshot, self._db.clock()))

    async def load_snapshot(self, run_id: str) -> base.SnapshotRecord | None:
        return await self._db.read_one(Q["load_snapshot"], (run_id,), snapshot_record)


def request_cancel_op(
    conn: sqlite3.Connection, run_id: str, cancelled_event: base.NewEvent, now: float
) -> str:
    """``request_cancel`` inside the writer's transaction; the run it reached."""
    tip = chain_tip(conn, run_id, "cancel")  # a continued run: its chain's live tip
    state, expires = RunState(tip["state"]), tip["lease_expires_at"]
    held = state is RunState.RUNNING and expires is not None and expires >= now
    params = {"now": now, "run_id": tip["run_id"]}
    if held or tip["next_seq"] > 1:  # a worker delivers it; cleanup may run
        conn.execute(Q["cancel_request"], params)
        return str(tip["run_id"])
    check_move(tip["run_id"], state, RunState.CANCELLED)
    insert_events(conn, tip["run_id"], tip["next_seq"], (cancelled_event,), now)
    conn.execute(Q["cancel_now"], params)
    close_family(conn, tip["run_id"], RunState.CANCELLED, now)
    return str(tip["run_id"])


def save_snapshot_op(
    conn: sqlite3.Connection, lease: base.Lease, snapshot: base.NewSnapshot, now: float
) -> None:
    """The fence check and the snapshot row, inside the writer's transaction."""
    check_snapshot(snapshot, lease_next_seq(conn, lease, now))
    params = params_of(snapshot) | {"run_id": lease.run_id, "now": now}
    conn.execute(Q["save_snapshot"], params)
