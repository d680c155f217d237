"""A long sequential workflow with small snapshots, and (test-only) a worker that
SIGKILLs itself in the middle of writing one.

``acc.snap_long`` runs ``n`` steps one after the other, each feeding the next,
with ``snapshot_every=EVERY``. Each step body logs ``start-<i>`` (see
``_record``), so a test counts the executions of every iteration.

When ``$KEEL_ACC_SNAPKILL`` is ``K`` (set only for the worker meant to die),
importing this module patches the store's snapshot write, in this process
only, so that the K-th snapshot write sends the process SIGKILL after its
UPSERT has run inside its transaction and before that transaction commits:

- SQLite: ``keel.store.sqlite.runs.save_snapshot_op`` (the fence check and the
  UPSERT, run by the writer inside ``BEGIN IMMEDIATE``) is wrapped; the
  process dies after it returns, before the writer's ``COMMIT``.
- PostgreSQL: a snapshot write is one autocommit statement (the server commits
  it as it runs), so there is no "sent, not yet committed" moment on the real
  path. ``PgDatabase.write`` is wrapped for ``save_snapshot`` alone: the
  store's own ``save_snapshot`` statement runs inside an explicit ``BEGIN`` on
  a connection made like the store's, and the process dies before ``COMMIT``;
  the server sees the connection drop and rolls the transaction back.

Before dying, the hook reads the snapshot row back *inside* the open
transaction (so the UPSERT provably took effect there) and writes
``<backend> <run_id> <upto_seq written> <upto_seq seen in the transaction>
<pid>`` to ``$KEEL_ACC_DIR/snapkill`` (a write(2), in the page cache before
the signal, so it survives the process).
"""

from __future__ import annotations

import os
import signal
from typing import Any

import keel
from tests.acceptance.apps._record import acc_dir, record

EVERY = 20
KILL_ENV = "KEEL_ACC_SNAPKILL"
MARK_NAME = "snapkill"


def _next(i: int, x: int) -> int:
    return (x * 31 + i + 7) % 1_000_003


def expected(n: int) -> int:
    """The workflow's result for ``n``, computed without Keel."""
    value = 0
    for i in range(n):
        value = _next(i, value)
    return value


@keel.step(name="acc.snap_step")
def snap_step(i: int, x: int) -> int:
    record(f"start-{i}")
    return _next(i, x)


@keel.workflow(name="acc.snap_long", snapshot_every=EVERY)
async def snap_long(n: int) -> int:
    value = 0
    for i in range(n):
        value = await snap_step(i, value)
    return value


# --- test-only: die inside the K-th snapshot write -------------------------------------


class _Killer:
    def __init__(self, k: int) -> None:
        self.k = k
        self.writes = 0

    def due(self) -> bool:
        self.writes += 1
        return self.writes == self.k

    @staticmethod
    def die(backend: str, run_id: str, upto_seq: int, seen: Any) -> None:
        line = f"{backend} {run_id} {upto_seq} {seen} {os.getpid()}\n"
        fd = os.open(acc_dir() / MARK_NAME, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable: SIGKILL is not catchable")


def _install(k: int) -> None:
    killer = _Killer(k)
    _patch_sqlite(killer)
    _patch_postgres(killer)


def _patch_sqlite(killer: _Killer) -> None:
    import sqlite3

    from keel.store.base import Lease, NewSnapshot
    from keel.store.sqlite import runs
    from keel.store.sqlite._sql import Q

    real_save_op = runs.save_snapshot_op

    def save_op_then_die(
        conn: sqlite3.Connection, lease: Lease, snapshot: NewSnapshot, now: float
    ) -> None:
        real_save_op(conn, lease, snapshot, now)  # the fence check and the UPSERT
        if not killer.due():
            return
        assert conn.in_transaction, "the snapshot write is not in a transaction"
        row = conn.execute(Q["load_snapshot"], (lease.run_id,)).fetchone()
        killer.die("sqlite", lease.run_id, snapshot.upto_seq, row["upto_seq"] if row else None)

    runs.save_snapshot_op = save_op_then_die  # looked up at call time by save_snapshot


def _patch_postgres(killer: _Killer) -> None:
    try:
        from psycopg.pq import TransactionStatus
        from psycopg.rows import tuple_row

        from keel.store.postgres._sql import Q
        from keel.store.postgres.database import PgDatabase
    except ImportError:  # no PostgreSQL driver: only SQLite can be patched
        return
    real_write = PgDatabase.write

    async def write_then_die(
        self: Any, sql: str, params: dict[str, Any], row: Any = tuple_row
    ) -> Any:
        if sql != Q["save_snapshot"] or not killer.due():
            return await real_write(self, sql, params, row)
        conn = await self.pool.connect()  # made like the store's own (autocommit, search_path)
        await conn.execute("BEGIN")
        cur = conn.cursor(row_factory=row, binary=True)
        await cur.execute(sql, params)
        rows = await cur.fetchall()
        if not rows:  # fenced out: nothing to die in the middle of
            await conn.rollback()
            await conn.close()
            return rows
        assert conn.pgconn.transaction_status == TransactionStatus.INTRANS
        cur2 = await conn.execute(Q["load_snapshot"], {"run_id": params["run_id"]})
        found = await cur2.fetchone()
        killer.die("postgres", params["run_id"], params["upto_seq"], found[1] if found else None)

    PgDatabase.write = write_then_die  # type: ignore[method-assign]


if os.environ.get(KILL_ENV):
    _install(int(os.environ[KILL_ENV]))
