"""The SQLite store's journal snapshots: a mixin of :class:`SQLiteStore`."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from keel.errors import LeaseLostError
from keel.store._checks import check_snapshot
from keel.store.base import Lease, NewSnapshot, SnapshotRecord
from keel.store.sqlite import _sql
from keel.store.sqlite._fence import fence_error

T = TypeVar("T")
Q = _sql.queries()


def save_op(conn: sqlite3.Connection, lease: Lease, snapshot: NewSnapshot, now: float) -> None:
    """The fence check and the snapshot row, inside the writer's transaction."""
    row = conn.execute(Q["fence_row"], (lease.run_id,)).fetchone()
    if row is None:
        raise LeaseLostError(lease.run_id, lease.token, "the run does not exist")
    next_seq = row[4]
    # The fence of append_events with first_seq = next_seq: only the lease counts.
    error = fence_error(lease, next_seq, now, *row)
    if error is not None:
        raise error
    check_snapshot(snapshot, next_seq)
    conn.execute(
        Q["save_snapshot"],
        {
            "run_id": lease.run_id,
            "upto_seq": snapshot.upto_seq,
            "version": snapshot.version,
            "format": snapshot.format,
            "data": snapshot.data,
            "now": now,
        },
    )


class SQLiteSnapshots:
    """Snapshot methods of :class:`~keel.store.sqlite.SQLiteStore`: the latest per run."""

    _clock: Callable[[], float]

    if TYPE_CHECKING:  # defined by SQLiteStore

        async def _write(
            self,
            op: Callable[[sqlite3.Connection], T],
            *,
            notify: bool = False,
            work: bool = True,
        ) -> T: ...

        async def _read(self, op: Callable[[sqlite3.Connection], T]) -> T: ...

    async def save_snapshot(self, lease: Lease, snapshot: NewSnapshot) -> None:
        def op(conn: sqlite3.Connection) -> None:
            save_op(conn, lease, snapshot, self._clock())

        await self._write(op)

    async def load_snapshot(self, run_id: str) -> SnapshotRecord | None:
        def op(conn: sqlite3.Connection) -> SnapshotRecord | None:
            row = conn.execute(Q["load_snapshot"], (run_id,)).fetchone()
            return None if row is None else SnapshotRecord(*row)

        return await self._read(op)
