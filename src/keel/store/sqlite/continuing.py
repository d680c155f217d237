"""The SQLite store's continue-as-new: a mixin of :class:`SQLiteStore`.

Writes go through the store's single writer connection in ``BEGIN
IMMEDIATE`` transactions, so the switch and a concurrent signal or cancel
are serialised: whichever commits second sees the other's result.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from keel.core.states import RunState
from keel.errors import RunExistsError, RunFinishedError, RunNotFoundError
from keel.store.base import Lease, NewEvent, NewRun
from keel.store.sqlite import _sql
from keel.store.sqlite._fence import fence_params, fenced
from keel.store.sqlite.children import insert_params

T = TypeVar("T")
Q = _sql.queries()


def chain_tip(conn: sqlite3.Connection, run_id: str, action: str) -> str:
    """The live run a signal or cancel of ``run_id`` reaches: the run itself, or
    the tip of its continue-as-new chain. Raises if it has ended."""
    row = conn.execute(Q["chain_step"], (run_id,)).fetchone()
    if row is None:
        raise RunNotFoundError(run_id)
    while row[0] == RunState.CONTINUED and row[1] is not None:
        successor = conn.execute(Q["chain_step"], (row[1],)).fetchone()
        if successor is None:
            break
        run_id, row = row[1], successor
    if RunState(row[0]).is_terminal:
        raise RunFinishedError(run_id, row[0], action)
    return run_id


class SQLiteContinue:
    """Continue-as-new methods of :class:`~keel.store.sqlite.SQLiteStore`."""

    _clock: Callable[[], float]

    if TYPE_CHECKING:  # defined by SQLiteStore

        async def _write(
            self,
            op: Callable[[sqlite3.Connection], T],
            *,
            notify: bool = False,
            work: bool = True,
        ) -> T: ...

    async def continue_run(
        self,
        lease: Lease,
        first_seq: int,
        events: Sequence[NewEvent],
        successor: NewRun,
    ) -> None:
        events = tuple(events)

        def op(conn: sqlite3.Connection) -> None:
            # One transaction: a lost lease or a taken successor id rolls back all.
            now = self._clock()
            params = fence_params(lease, first_seq, len(events), now)
            params["successor"] = successor.run_id
            fenced(conn, Q["fenced_continue"], params, lease, first_seq, events, now)
            rows = conn.execute(Q["insert_run"], insert_params(successor, now, None, None))
            if not rows.fetchall():
                raise RunExistsError([successor.run_id])
            s = successor.started
            conn.execute(Q["insert_event"], (successor.run_id, 0, s.type, s.command, s.data, now))
            moved = {"run_id": lease.run_id, "successor": successor.run_id}
            conn.execute(Q["successor_takes_over"], moved)
            conn.execute(Q["move_signals"], moved)
            conn.execute(Q["drop_open_tasks"], moved)
            conn.execute(
                Q["cancel_children"],
                {"run_id": lease.run_id, "now": now, "state": RunState.CONTINUED.value},
            )

        await self._write(op, notify=True)
