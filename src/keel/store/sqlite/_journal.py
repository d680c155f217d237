"""Writes on runs and their journals that several capabilities make, inside the
writer's transaction: the lease fence, events, new runs, the end of a run's
family, the live tip of a continue-as-new chain."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from keel.core.states import RunState
from keel.errors import LeaseLostError, RunFinishedError, RunNotFoundError, StoreError
from keel.store.base import Lease, NewEvent, NewRun, RunRecord, created_record
from keel.store.sqlite._rows import params_of
from keel.store.sqlite._sql import Q


def fence(
    conn: sqlite3.Connection,
    lease: Lease,
    first_seq: int,
    events: Sequence[NewEvent],
    now: float,
) -> None:
    """The fence check of a write under ``lease`` (which also takes the seqs of its
    events), then the events from ``first_seq`` on; raise, having written nothing
    that stays, if the lease does not hold or the journal continues elsewhere."""
    params = {
        "n": len(events),
        "now": now,
        "run_id": lease.run_id,
        "token": lease.token,
        "owner": lease.owner,
        "first_seq": first_seq,
    }
    if conn.execute(Q["fenced_append"], params).rowcount != 1:
        row = conn.execute(Q["run_head"], (lease.run_id,)).fetchone()
        raise fence_error(lease, first_seq, now, row) or StoreError(
            f"fenced write to run {lease.run_id!r} matched no row"
        )
    insert_events(conn, lease.run_id, first_seq, events, now)


def lease_next_seq(conn: sqlite3.Connection, lease: Lease, now: float) -> int:
    """The fence check alone (a write that appends nothing): the run's ``next_seq``."""
    row = conn.execute(Q["run_head"], (lease.run_id,)).fetchone()
    next_seq: int = row["next_seq"] if row is not None else 0
    error = fence_error(lease, next_seq, now, row)
    if error is not None:
        raise error
    return next_seq


def fence_error(
    lease: Lease, first_seq: int, now: float, row: sqlite3.Row | None
) -> StoreError | None:
    """The error a write of ``lease`` at ``first_seq`` gets from the run's ``run_head``
    row (read in the write's transaction), or ``None`` if the fence holds."""
    if row is None:
        return LeaseLostError(lease.run_id, lease.token, "the run does not exist")
    owner, token, expires_at = row["lease_owner"], row["lease_token"], row["lease_expires_at"]
    if row["state"] != RunState.RUNNING:
        detail = f"the run is {row['state']}"
    elif owner != lease.owner or token != lease.token:
        detail = f"the run is now leased to {owner!r} with token {token}"
    elif expires_at is None or expires_at < now:
        detail = "the lease expired"
    elif row["next_seq"] != first_seq:
        return StoreError(
            f"journal of run {lease.run_id!r} continues at seq {row['next_seq']}, "
            f"but the write starts at seq {first_seq}"
        )
    else:
        return None
    return LeaseLostError(lease.run_id, lease.token, detail)


def insert_events(
    conn: sqlite3.Connection, run_id: str, first_seq: int, events: Sequence[NewEvent], now: float
) -> None:
    if len(events) == 1:  # the common case: no list to build
        e = events[0]
        conn.execute(Q["insert_event"], (run_id, first_seq, e.type, e.command, e.data, now))
    elif events:
        conn.executemany(
            Q["insert_event"],
            [(run_id, first_seq + i, e.type, e.command, e.data, now) for i, e in enumerate(events)],
        )


def insert_run(
    conn: sqlite3.Connection, run: NewRun, now: float, lease: Lease | None = None
) -> RunRecord | None:
    """Insert ``run`` (pending and due, or running under ``lease``) with its started
    event; its row, or ``None`` (nothing written) if the run id is taken."""
    created = created_record(run, now, lease)
    if conn.execute(Q["insert_run"], params_of(created)).rowcount == 0:
        return None
    insert_events(conn, run.run_id, 0, (run.started,), now)
    return created


def close_family(conn: sqlite3.Connection, run_id: str, state: RunState, now: float) -> bool:
    """A run just ended in ``state``: ask the children it closes to cancel, discard
    its open dispatched steps and (unless it continued) wake its parent. Return
    whether that made any run due (claim loops should look)."""
    params = {"run_id": run_id, "now": now, "state": state}  # a StrEnum binds as its text
    conn.execute(Q["drop_open_tasks"], params)
    woken = conn.execute(Q["cancel_children"], params).rowcount
    if state is not RunState.CONTINUED:  # the chain has not ended
        woken += conn.execute(Q["wake_parent"], params).rowcount
    return woken > 0


def chain_tip(conn: sqlite3.Connection, run_id: str, action: str) -> sqlite3.Row:
    """The ``run_head`` of the live run a signal or cancel of ``run_id`` reaches: the
    run itself, or the tip of its continue-as-new chain. Raises if it has ended."""
    row = conn.execute(Q["run_head"], (run_id,)).fetchone()
    if row is None:
        raise RunNotFoundError(run_id)
    while row["state"] == RunState.CONTINUED and row["continued_to"] is not None:
        successor = conn.execute(Q["run_head"], (row["continued_to"],)).fetchone()
        if successor is None:
            break
        run_id, row = row["continued_to"], successor
    if RunState(row["state"]).is_terminal:
        raise RunFinishedError(run_id, row["state"], action)
    tip: sqlite3.Row = row
    return tip
