"""Runs on PostgreSQL: creation, leases, the fenced commit of a turn, cancel
requests and snapshots (:class:`~keel.store.ports.RunJournal`).

The fence is in each statement (see queries.sql), so a stale write changes
nothing; only when it matches nothing does a second query find out why.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg.rows import tuple_row

from keel.core.states import RunState
from keel.errors import (
    LeaseLostError,
    RunExistsError,
    RunFinishedError,
    RunNotFoundError,
    StoreError,
)
from keel.store._checks import (
    check_claim_limit,
    check_snapshot,
    check_ttl,
    duplicate_task,
    versions_json,
)
from keel.store.base import (
    Claimed,
    Lease,
    NewEvent,
    NewRun,
    NewSnapshot,
    RenewOutcome,
    RunRecord,
    SnapshotRecord,
    VersionPairs,
    created_record,
)
from keel.store.ports import Committed, Continue, Turn
from keel.store.postgres._sql import DICT, SNAPSHOT, Q, fields, run_record, without
from keel.store.postgres._writes import Statement
from keel.store.postgres.database import PgDatabase
from keel.store.postgres.reads import fetch_run, fetch_runs
from keel.store.postgres.turns import fence, turn_statement


@dataclass
class PgRuns:
    """Runs, their journals, leases and fencing, in a :class:`PgDatabase`."""

    db: PgDatabase

    async def create(
        self, run: NewRun, *, lease_owner: str | None = None, lease_ttl: float = 30.0
    ) -> tuple[RunRecord, Lease | None, bool]:
        if lease_owner is not None:
            check_ttl(lease_ttl)
        params = one_run(run, self.db.channel) | {
            "owner": lease_owner,
            "ttl": None if lease_owner is None else lease_ttl,
        }
        rows = await self.db.write(Q["create_run"], params, DICT)
        if rows:
            [row] = rows
            lease = None
            if lease_owner is not None:
                lease = Lease(run.run_id, lease_owner, row["lease_token"], row["lease_expires_at"])
            return created_record(run, row["created_at"], lease), lease, True
        # It exists (perhaps committed by a concurrent create a moment ago): write nothing.
        existing = await fetch_run(self.db, run.run_id)
        if existing is None:
            raise StoreError(f"run {run.run_id!r} exists but could not be read back")
        return existing, None, False

    async def claim(
        self, owner: str, *, limit: int, ttl: float, versions: VersionPairs | None = None
    ) -> list[Claimed]:
        check_claim_limit(limit)
        check_ttl(ttl)
        params = {"owner": owner, "limit": limit, "ttl": ttl, "versions": versions_json(versions)}
        claimed = []
        for row in await self.db.fetch_clocked(Q["claim_runs"], params, DICT):
            if row["run_id"] is None:  # the clock-only row: nothing was claimable
                continue
            run = run_record(**without(row, "now"))
            assert run.lease_expires_at is not None
            lease = Lease(run.run_id, owner, run.lease_token, run.lease_expires_at)
            claimed.append(Claimed(lease, run))
        return claimed

    async def renew(self, owner: str, leases: Sequence[Lease], ttl: float) -> RenewOutcome:
        check_ttl(ttl)
        self.db.pool.check_open()
        if not leases:
            return RenewOutcome(self.db.clock.now() + ttl, frozenset(), frozenset())
        mine = [lease for lease in leases if lease.owner == owner]
        held = {"run_ids": [m.run_id for m in mine], "tokens": [m.token for m in mine]}
        params = {"owner": owner, "ttl": ttl} | held
        [row] = await self.db.fetch_clocked(Q["renew_leases"], params, DICT)
        lost = {lease.run_id for lease in leases} - set(row["renewed"])
        return RenewOutcome(row["expires_at"], frozenset(lost), frozenset(row["cancel_requested"]))

    async def commit(self, lease: Lease, turn: Turn) -> Committed:
        sql, params = turn_statement(lease, turn, self.db.channel)
        # Only a turn with tasks reads its row (the task ids); others need to know
        # that one came back, and the hot path skips making a dict of it.
        row = DICT if turn.tasks else tuple_row
        try:
            if isinstance(turn.end, Continue):
                # The row lock first, so that the commit's snapshot sees every
                # signal committed before it (see lock_run).
                lock = Statement(Q["lock_run"], {"run_id": lease.run_id}, tuple_row)
                _, rows = await self.db.transaction(lock, Statement(sql, params, row))
            else:
                rows = await self.db.write(sql, params, row)
        except StoreError as exc:
            # A unique violation rolled the statement back: say which ids are taken.
            born = params.get("run_ids")  # the children, and a successor
            taken = await fetch_runs(self.db, born) if born else {}
            if taken:
                raise RunExistsError(sorted(taken)) from exc
            raise
        if not rows:
            raise await self._fence_error(lease, turn)
        if not turn.tasks:
            return Committed()
        ids = {r["command"]: r["task_id"] for r in rows}
        return Committed([ids[task.command] for task in turn.tasks])

    async def request_cancel(self, run_id: str, cancelled_event: NewEvent) -> RunState:
        ev = cancelled_event
        params = {
            "run_id": run_id,
            "type": ev.type,
            "command": ev.command,
            "data": ev.data,
            "channel": self.db.channel,
        }
        for _ in range(10):
            rows = await self.db.fetch(Q["request_cancel"], params, DICT)
            if rows:
                return RunState(rows[0]["state"])
            params["run_id"] = await chain_tip(self.db, run_id, "cancel")
        raise StoreError(f"could not cancel run {run_id!r}: it keeps changing")

    async def save_snapshot(self, lease: Lease, snapshot: NewSnapshot) -> None:
        params = fence(lease) | fields(snapshot)
        rows = await self.db.write(Q["save_snapshot"], params, DICT)
        if not rows:
            error = await self._fence_error(lease, None)
            if isinstance(error, LeaseLostError):
                raise error
            raise StoreError(f"fenced write to run {lease.run_id!r} matched no row; retry it")
        check_snapshot(snapshot, rows[0]["next_seq"])  # the INSERT had the same condition

    async def load_snapshot(self, run_id: str) -> SnapshotRecord | None:
        rows = await self.db.fetch(Q["load_snapshot"], {"run_id": run_id}, SNAPSHOT)
        return rows[0] if rows else None

    async def _fence_error(self, lease: Lease, turn: Turn | None) -> StoreError:
        """Why a fenced write matched no row: a lost lease, a seq mismatch, a used
        signal or a task command taken."""
        signal = None if turn is None else turn.consume_signal
        commands = [] if turn is None else [t.command for t in turn.tasks]
        params = {"run_id": lease.run_id, "signal_id": signal, "task_commands": commands}
        rows = await self.db.fetch(Q["fence_row"], params, DICT)
        if not rows:
            return LeaseLostError(lease.run_id, lease.token, "the run does not exist")
        row = rows[0]
        holder, token = row["lease_owner"], row["lease_token"]
        if row["state"] != RunState.RUNNING:
            detail = f"the run is {row['state']}"
        elif holder != lease.owner or token != lease.token:
            detail = f"the run is now leased to {holder!r} with token {token}"
        elif row["lease_expires_at"] is None or row["lease_expires_at"] < row["now"]:
            detail = "the lease expired"
        elif turn is not None and row["next_seq"] != turn.first_seq:
            return StoreError(
                f"journal of run {lease.run_id!r} continues at seq {row['next_seq']}, "
                f"but the write starts at seq {turn.first_seq}"
            )
        elif signal is not None and not row["signal_ok"]:
            return StoreError(
                f"signal {signal} is not an unconsumed signal of run {lease.run_id!r}"
            )
        elif row["tasks_taken"]:
            return duplicate_task(lease.run_id, commands)
        else:  # it changed back between the two queries (renewed at the last moment?)
            return StoreError(f"fenced write to run {lease.run_id!r} matched no row; retry it")
        return LeaseLostError(lease.run_id, lease.token, detail)


def one_run(run: NewRun | None, channel: str) -> dict[str, Any]:
    """The parameters of the ``one_run`` piece (create_run, fire_schedule): the
    run's fields and its started event's, all ``None`` without a run."""
    if run is None:
        names = [f.name for f in (*dataclasses.fields(NewRun), *dataclasses.fields(NewEvent))]
        values = dict.fromkeys(names)
    else:
        values = fields(run) | fields(run.started)
    return values | {"owner": None, "ttl": None, "channel": channel}


async def chain_tip(db: PgDatabase, run_id: str, action: str) -> str:
    """The live run a signal or cancel of ``run_id`` reaches (the run, or the tip
    of its continue-as-new chain); raises if there is none."""
    rows = await db.fetch(Q["chain_tip"], {"run_id": run_id}, DICT)
    if not rows:
        raise RunNotFoundError(run_id)
    tip, state = rows[0]["run_id"], rows[0]["state"]
    if RunState(state).is_terminal:
        raise RunFinishedError(tip, state, action)
    return str(tip)
