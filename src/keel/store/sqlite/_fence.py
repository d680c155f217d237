"""Fenced journal writes of the SQLite store: the lease check and the event rows."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from keel.core.states import RunState
from keel.errors import LeaseLostError, StoreError
from keel.store.base import Lease, NewEvent
from keel.store.sqlite import _sql

Q = _sql.queries()


def fence_params(lease: Lease, first_seq: int, n: int, now: float) -> dict[str, Any]:
    return {
        "n": n,
        "now": now,
        "run_id": lease.run_id,
        "token": lease.token,
        "owner": lease.owner,
        "first_seq": first_seq,
    }


def fenced(
    conn: sqlite3.Connection,
    query: str,
    params: dict[str, Any],
    lease: Lease,
    first_seq: int,
    events: Sequence[NewEvent],
    now: float,
) -> None:
    """Run the fenced UPDATE, then insert ``events``; raise if the fence held nothing."""
    if conn.execute(query, params).rowcount != 1:
        _diagnose(conn, lease, first_seq, now)
    run_id = lease.run_id
    if len(events) == 1:
        e = events[0]
        conn.execute(Q["insert_event"], (run_id, first_seq, e.type, e.command, e.data, now))
    elif events:
        conn.executemany(
            Q["insert_event"],
            [(run_id, first_seq + i, e.type, e.command, e.data, now) for i, e in enumerate(events)],
        )


def _diagnose(conn: sqlite3.Connection, lease: Lease, first_seq: int, now: float) -> None:
    """Say why a fenced write matched no row: a lost lease, or a seq mismatch."""
    row = conn.execute(Q["fence_row"], (lease.run_id,)).fetchone()
    if row is None:
        raise LeaseLostError(lease.run_id, lease.token, "the run does not exist")
    raise _fence_error(lease, first_seq, now, *row)


def fence_error(
    lease: Lease,
    first_seq: int,
    now: float,
    state: str,
    owner: str | None,
    token: int,
    expires_at: float | None,
    next_seq: int,
) -> StoreError | None:
    """The error a fenced write of ``lease`` at ``first_seq`` would get from a run
    row in this state (read in the write's transaction), or ``None`` if it passes."""
    if (
        state == RunState.RUNNING
        and (owner, token) == (lease.owner, lease.token)
        and expires_at is not None
        and expires_at >= now
        and next_seq == first_seq
    ):
        return None
    return _fence_error(lease, first_seq, now, state, owner, token, expires_at, next_seq)


def _fence_error(
    lease: Lease,
    first_seq: int,
    now: float,
    state: str,
    owner: str | None,
    token: int,
    expires_at: float | None,
    next_seq: int,
) -> StoreError:
    """The error for a fenced write that matched no row of a run in this state."""
    if state != RunState.RUNNING:
        detail = f"the run is {state}"
    elif owner != lease.owner or token != lease.token:
        detail = f"the run is now leased to {owner!r} with token {token}"
    elif expires_at is None or expires_at < now:
        detail = "the lease expired"
    elif next_seq != first_seq:
        return StoreError(
            f"journal of run {lease.run_id!r} continues at seq {next_seq}, "
            f"but the write starts at seq {first_seq}"
        )
    else:  # pragma: no cover - the fenced UPDATE would have matched
        return StoreError(f"fenced write to run {lease.run_id!r} matched no row")
    return LeaseLostError(lease.run_id, lease.token, detail)
