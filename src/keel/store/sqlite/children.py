"""The SQLite store's child runs: a mixin of :class:`SQLiteStore`."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from keel.errors import RunExistsError
from keel.store._checks import check_children
from keel.store.base import Lease, NewEvent, NewRun
from keel.store.sqlite import _sql
from keel.store.sqlite._fence import fence_params, fenced

T = TypeVar("T")
Q = _sql.queries()


def insert_params(
    run: NewRun, now: float, lease_owner: str | None, expires: float | None
) -> dict[str, Any]:
    """Parameters of ``insert_run``: pending, or running under a new lease of ``lease_owner``."""
    return {
        "run_id": run.run_id,
        "workflow": run.workflow,
        "version": run.version,
        "state": "pending" if lease_owner is None else "running",
        "now": now,
        "wake_at": now if lease_owner is None else None,
        "lease_owner": lease_owner,
        "lease_token": 0 if lease_owner is None else 1,
        "lease_expires_at": expires,
        "input": run.input,
        "parent_run_id": run.parent_run_id,
        "parent_close": run.parent_close,
        "depth": run.depth,
        "chain_id": run.chain_id,
        "generation": run.generation,
    }


def close_family(conn: sqlite3.Connection, run_id: str, state: str, now: float) -> bool:
    """A run just ended in ``state``: wake its parent, ask the children it closes to
    cancel, discard its open dispatched steps. Returns whether that made any run
    due (claim loops should look)."""
    params = {"run_id": run_id, "now": now, "state": state}
    conn.execute(Q["drop_open_tasks"], params)
    woken = conn.execute(Q["wake_parent"], params).rowcount
    return woken + conn.execute(Q["cancel_children"], params).rowcount > 0


class SQLiteChildren:
    """Child-run methods of :class:`~keel.store.sqlite.SQLiteStore`."""

    _clock: Callable[[], float]

    if TYPE_CHECKING:  # defined by SQLiteStore

        async def _write(
            self,
            op: Callable[[sqlite3.Connection], T],
            *,
            notify: bool = False,
            work: bool = True,
        ) -> T: ...

    async def start_children(
        self,
        lease: Lease,
        first_seq: int,
        events: Sequence[NewEvent],
        children: Sequence[NewRun],
    ) -> None:
        check_children(children)
        events, children = tuple(events), tuple(children)

        def op(conn: sqlite3.Connection) -> None:
            # The fenced append and the child runs in one transaction: a lost
            # lease or a taken run id rolls back both.
            now = self._clock()
            params = fence_params(lease, first_seq, len(events), now)
            fenced(conn, Q["fenced_append"], params, lease, first_seq, events, now)
            taken = []
            for child in children:
                rows = conn.execute(Q["insert_run"], insert_params(child, now, None, None))
                if not rows.fetchall():
                    taken.append(child.run_id)
                    continue
                s = child.started
                conn.execute(Q["insert_event"], (child.run_id, 0, s.type, s.command, s.data, now))
            if taken:
                raise RunExistsError(taken)

        await self._write(op, notify=bool(children))
