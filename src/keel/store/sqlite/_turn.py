"""What one fenced commit of a :class:`~keel.store.ports.Turn` writes, in the
writer's transaction, in the order of the port: the fence and the events, the
signal consumed, the child runs, the tasks, the end. A failure of any part
raises, and the writer rolls back all of it."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from keel.core.states import RunState
from keel.errors import RunExistsError, StoreError
from keel.store._checks import duplicate_task
from keel.store.base import Lease, NewRun, NewTask
from keel.store.ports import Continue, Finish, Suspend, Turn
from keel.store.sqlite._journal import close_family, fence, insert_run
from keel.store.sqlite._rows import params_of
from keel.store.sqlite._sql import Q


def write_turn(
    conn: sqlite3.Connection, lease: Lease, turn: Turn, state: RunState, now: float
) -> tuple[list[int], bool]:
    """Write ``turn`` (checked: its end leaves the run in ``state``); the new task
    ids, and whether its end made another run due."""
    fence(conn, lease, turn.first_seq, turn.events, now)
    if turn.consume_signal is not None:
        _consume(conn, lease.run_id, turn.consume_signal, turn.first_seq)
    if turn.children:
        _start_children(conn, turn.children, now)
    task_ids = _insert_tasks(conn, lease.run_id, turn.tasks, now) if turn.tasks else []
    end = turn.end
    return task_ids, end is not None and _end(conn, lease.run_id, end, state, now)


def _end(
    conn: sqlite3.Connection,
    run_id: str,
    end: Suspend | Finish | Continue,
    state: RunState,
    now: float,
) -> bool:
    """The end of a turn, after its other parts; whether it made another run due."""
    if isinstance(end, Suspend):
        wake = {
            "wake_at": end.wake_at,
            "signal_names": json.dumps(sorted(end.wake_on_signals)),
            "task_commands": json.dumps(sorted(end.wake_on_tasks)),
            "child_ids": json.dumps(sorted(end.wake_on_children)),
            "cancel_delivered": end.cancel_delivered,
        }
        conn.execute(Q["suspend"], wake | {"run_id": run_id, "now": now})
        return False
    if isinstance(end, Continue):
        _continue(conn, run_id, end.successor, now)
        return False
    ended = {"state": state, "result": end.result, "error": end.error, "successor": None}
    conn.execute(Q["end_run"], ended | {"run_id": run_id})
    return close_family(conn, run_id, state, now)


def _consume(conn: sqlite3.Connection, run_id: str, signal_id: int, seq: int) -> None:
    params = {"seq": seq, "id": signal_id, "run_id": run_id}
    if conn.execute(Q["consume_signal"], params).rowcount != 1:
        raise StoreError(f"signal {signal_id} is not an unconsumed signal of run {run_id!r}")


def _start_children(conn: sqlite3.Connection, children: Sequence[NewRun], now: float) -> None:
    taken = [c.run_id for c in children if insert_run(conn, c, now) is None]
    if taken:
        raise RunExistsError(taken)


def _insert_tasks(
    conn: sqlite3.Connection, run_id: str, tasks: Sequence[NewTask], now: float
) -> list[int]:
    ids = []
    for t in tasks:
        params = params_of(t) | {"run_id": run_id, "now": now}
        try:
            ids.append(conn.execute(Q["insert_task"], params).fetchone()["task_id"])
        except sqlite3.IntegrityError as exc:  # (run_id, command) is unique
            raise duplicate_task(run_id, [t.command]) from exc
    return ids


def _continue(conn: sqlite3.Connection, run_id: str, successor: NewRun, now: float) -> None:
    """End the run ``continued`` and hand its chain to ``successor``."""
    if insert_run(conn, successor, now) is None:
        raise RunExistsError([successor.run_id])
    params = {"run_id": run_id, "successor": successor.run_id}
    ended = {"state": RunState.CONTINUED, "result": None, "error": None}
    conn.execute(Q["end_run"], params | ended)
    conn.execute(Q["successor_takes_over"], params)
    conn.execute(Q["move_signals"], params)
    close_family(conn, run_id, RunState.CONTINUED, now)
