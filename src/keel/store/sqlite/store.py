"""The SQLite store: an embedded Keel database that several processes on one machine share.

One writer thread owns the write connection and commits every write queued
at that moment in one transaction (group commit); a reader thread serves reads
from a WAL snapshot; a watcher thread notices commits by other processes.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import TypeVar

from keel.core.states import RunState
from keel.errors import (
    ConfigurationError,
    RunCancellingError,
    RunFinishedError,
    RunNotFoundError,
    StoreError,
)
from keel.store._checks import (
    check_limit,
    check_terminal,
    check_ttl,
    decode_cursor,
    page_of,
    run_filter,
    versions_json,
)
from keel.store.base import (
    Claimed,
    EventRecord,
    Lease,
    NewEvent,
    NewRun,
    RenewOutcome,
    RunFilter,
    RunPage,
    RunRecord,
    SignalRecord,
)
from keel.store.sqlite import _schema, _sql
from keel.store.sqlite._fence import fence_params, fenced
from keel.store.sqlite._threads import ChangeWaiters, DbThread, Watcher
from keel.store.sqlite.children import SQLiteChildren, close_family, insert_params
from keel.store.sqlite.continuing import SQLiteContinue, chain_tip
from keel.store.sqlite.liveness import SQLiteLiveness
from keel.store.sqlite.schedules import SQLiteSchedules
from keel.store.sqlite.snapshots import SQLiteSnapshots
from keel.store.sqlite.tasks import SQLiteTasks
from keel.store.sqlite.versions import SQLiteVersions

T = TypeVar("T")
Q = _sql.queries()

_SYNCHRONOUS = ("FULL", "NORMAL")


class SQLiteStore(
    SQLiteTasks,
    SQLiteSchedules,
    SQLiteChildren,
    SQLiteContinue,
    SQLiteSnapshots,
    SQLiteLiveness,
    SQLiteVersions,
):
    """Keel store on one SQLite file (WAL mode).

    ``synchronous="FULL"`` (default) makes every commit survive power loss.
    ``"NORMAL"`` is faster; on power loss (not on a process crash) the last
    commits may be lost, but the database is never corrupted.
    ``busy_timeout`` is how long a write waits for another process's lock.
    ``clock`` is the store clock; replace it only in tests, since every process
    sharing the file must agree on it.

    The dispatched-step (task) methods are in :class:`~keel.store.sqlite.tasks.SQLiteTasks`,
    the schedule methods in :class:`~keel.store.sqlite.schedules.SQLiteSchedules`,
    the child-run ones in :class:`~keel.store.sqlite.children.SQLiteChildren`,
    continue-as-new in :class:`~keel.store.sqlite.continuing.SQLiteContinue`,
    the journal snapshots in :class:`~keel.store.sqlite.snapshots.SQLiteSnapshots`,
    the worker versions in :class:`~keel.store.sqlite.versions.SQLiteVersions`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        busy_timeout: float = 10.0,
        poll_interval: float = 0.015,
        clock: Callable[[], float] = time.time,
    ) -> None:
        sync = synchronous.upper()
        if sync not in _SYNCHRONOUS:
            raise ConfigurationError(f"synchronous must be 'FULL' or 'NORMAL', not {synchronous!r}")
        if busy_timeout <= 0 or poll_interval <= 0:
            raise ConfigurationError("busy_timeout and poll_interval must be positive")
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"  # an absolute path gives four slashes
        self.synchronous = sync
        self._busy_timeout = busy_timeout
        self._poll_interval = poll_interval
        self._clock = clock
        self._writer: DbThread | None = None
        self._reader: DbThread | None = None
        self._watcher: Watcher | None = None
        self._waiters = ChangeWaiters()

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r}, synchronous={self.synchronous!r})"

    # -- lifecycle ---------------------------------------------------------------

    async def open(self) -> None:
        """Check the file, migrate it and start the connection threads. Idempotent."""
        if self._writer is not None:
            await asyncio.shield(asyncio.wrap_future(self._writer.ready))
            return
        path, timeout = self.path, self._busy_timeout
        writer = DbThread(
            "keel-sqlite-writer",
            lambda: _schema.prepare_writer(path, timeout, self.synchronous),
            writer=True,
            inline=True,
            busy_timeout=timeout,
            path=path,
        )
        self._writer = writer
        try:
            # Shielded: cancelling open() must not cancel the thread's own future.
            await asyncio.shield(asyncio.wrap_future(writer.ready))
        except BaseException:
            self._writer = None
            await writer.stop()
            raise
        self._reader = DbThread(
            "keel-sqlite-reader",
            lambda: _schema.prepare_reader(path, timeout),
            writer=False,
            path=path,
        )
        self._watcher = Watcher(
            "keel-sqlite-watcher", writer.data_version, self._waiters, self._poll_interval
        )

    async def close(self) -> None:
        """Finish queued writes, close every connection and stop the threads. Idempotent."""
        writer, reader, watcher = self._writer, self._reader, self._watcher
        self._writer = self._reader = self._watcher = None
        self._waiters.notify()  # nobody should sit out a timeout on a closed store
        if watcher is not None:
            await watcher.stop()
        if reader is not None:
            await reader.stop()
        if writer is not None:
            await writer.stop()

    async def now(self) -> float:
        # One machine shares this clock with every process using the file.
        return self._clock()

    async def _write(
        self,
        op: Callable[[sqlite3.Connection], T],
        *,
        notify: bool = False,
        work: bool = True,
    ) -> T:
        """Run ``op`` in the writer's next group transaction; resolved after COMMIT.

        ``notify`` wakes this process's ``wait_for_change`` callers: only for
        writes that can make a run claimable or finished. A worker's own journal
        appends do not, so they do not wake its claim loop for nothing.
        ``work=False``: the write cannot make a run claimable (a run finished),
        so ``wait_for_work`` callers (claim loops) sleep on.
        """
        if self._writer is None:
            raise StoreError(f"{self!r} is not open")
        result = await self._writer.call(op)
        if notify:
            self._waiters.notify(work=work)
        return result

    async def _read(self, op: Callable[[sqlite3.Connection], T]) -> T:
        if self._reader is None:
            raise StoreError(f"{self!r} is not open")
        return await self._reader.call(op)

    # -- runs ----------------------------------------------------------------------

    async def create_run(
        self, run: NewRun, *, lease_owner: str | None = None, lease_ttl: float = 30.0
    ) -> tuple[RunRecord, Lease | None, bool]:
        if lease_owner is not None:
            check_ttl(lease_ttl)

        def op(conn: sqlite3.Connection) -> tuple[RunRecord, Lease | None, bool]:
            now = self._clock()
            expires = None if lease_owner is None else now + lease_ttl
            rows = conn.execute(
                Q["insert_run"], insert_params(run, now, lease_owner, expires)
            ).fetchall()
            if not rows:  # it exists: write nothing
                existing = conn.execute(Q["get_run"], (run.run_id,)).fetchone()
                return _sql.run_record(existing), None, False
            started = run.started
            conn.execute(
                Q["insert_event"],
                (run.run_id, 0, started.type, started.command, started.data, now),
            )
            lease = None
            if lease_owner is not None and expires is not None:
                lease = Lease(run.run_id, lease_owner, 1, expires)
            return _sql.run_record(rows[0]), lease, True

        return await self._write(op, notify=lease_owner is None)

    async def get_run(self, run_id: str) -> RunRecord | None:
        def op(conn: sqlite3.Connection) -> RunRecord | None:
            row = conn.execute(Q["get_run"], (run_id,)).fetchone()
            return None if row is None else _sql.run_record(row)

        return await self._read(op)

    async def get_runs(self, run_ids: Collection[str]) -> dict[str, RunRecord]:
        ids = json.dumps(sorted(set(run_ids)))

        def op(conn: sqlite3.Connection) -> dict[str, RunRecord]:
            rows = conn.execute(Q["get_runs"], (ids,)).fetchall()
            return {r.run_id: r for r in map(_sql.run_record, rows)}

        return await self._read(op) if run_ids else {}

    async def list_runs(
        self,
        *,
        workflow: str | Collection[str] | None = None,
        state: RunState | Collection[RunState] | None = None,
        limit: int = 50,
        cursor: str | None = None,
        since: float | None = None,
        until: float | None = None,
        parent_run_id: str | None = None,
    ) -> RunPage:
        check_limit(limit)
        where = run_filter(workflow, state, since, until, parent_run_id)
        before = decode_cursor(cursor) if cursor else (math.inf, "")
        params = {
            **_filter_params(where),
            "before_created": before[0],
            "before_run_id": before[1],
            "limit": limit + 1,  # one more tells whether another page exists
        }
        query = Q["list_runs_by_workflow"] if len(where.workflows) == 1 else Q["list_runs"]

        def op(conn: sqlite3.Connection) -> list[RunRecord]:
            return [_sql.run_record(r) for r in conn.execute(query, params)]

        runs: list[RunRecord] = await self._read(op)
        return page_of(runs, limit)

    async def count_runs(
        self,
        *,
        workflow: str | Collection[str] | None = None,
        state: RunState | Collection[RunState] | None = None,
        since: float | None = None,
        until: float | None = None,
        parent_run_id: str | None = None,
    ) -> int:
        params = _filter_params(run_filter(workflow, state, since, until, parent_run_id))

        def op(conn: sqlite3.Connection) -> int:
            return int(conn.execute(Q["count_runs"], params).fetchone()[0])

        return await self._read(op)

    async def load_events(self, run_id: str, *, after_seq: int = -1) -> list[EventRecord]:
        def op(conn: sqlite3.Connection) -> list[EventRecord]:
            return [
                _sql.event_record(r) for r in conn.execute(Q["load_events"], (run_id, after_seq))
            ]

        return await self._read(op)

    # -- leases --------------------------------------------------------------------

    async def claim_runs(
        self,
        owner: str,
        *,
        limit: int,
        ttl: float,
        versions: Collection[tuple[str, str]] | None = None,
    ) -> list[Claimed]:
        if limit < 1:
            raise ValueError(f"claim limit must be at least 1, not {limit}")
        check_ttl(ttl)
        having = {"versions": versions_json(versions)}

        def candidates(conn: sqlite3.Connection) -> bool:
            params = {"now": self._clock(), "limit": 1, **having}
            return conn.execute(Q["claim_candidates"], params).fetchone() is not None

        # Idle workers poll often: look on the reader first so that an empty
        # claim never takes the file's write lock.
        if not await self._read(candidates):
            return []

        def op(conn: sqlite3.Connection) -> list[Claimed]:
            now = self._clock()
            expires = now + ttl
            params = {"now": now, "limit": limit, **having}
            found = conn.execute(Q["claim_candidates"], params).fetchall()
            claimed = []
            for run_id, _due in found:
                row = conn.execute(
                    Q["claim_run"],
                    {"owner": owner, "expires_at": expires, "now": now, "run_id": run_id},
                ).fetchall()[0]
                record = _sql.run_record(row)
                claimed.append(Claimed(Lease(run_id, owner, record.lease_token, expires), record))
            return claimed

        return await self._write(op)

    async def renew_leases(self, owner: str, leases: Sequence[Lease], ttl: float) -> RenewOutcome:
        check_ttl(ttl)
        if self._writer is None:
            raise StoreError(f"{self!r} is not open")
        if not leases:
            return RenewOutcome(self._clock() + ttl, frozenset(), frozenset())

        def op(conn: sqlite3.Connection) -> RenewOutcome:
            now = self._clock()
            expires = now + ttl
            lost: set[str] = set()
            cancel: set[str] = set()
            for lease in leases:
                rows = []
                if lease.owner == owner:
                    rows = conn.execute(
                        Q["renew_lease"],
                        {
                            "expires_at": expires,
                            "run_id": lease.run_id,
                            "token": lease.token,
                            "owner": owner,
                            "now": now,
                        },
                    ).fetchall()
                if not rows:
                    lost.add(lease.run_id)
                elif rows[0][0]:
                    cancel.add(lease.run_id)
            return RenewOutcome(expires, frozenset(lost), frozenset(cancel))

        return await self._write(op)

    # -- fenced journal writes -------------------------------------------------------

    async def append_events(
        self,
        lease: Lease,
        first_seq: int,
        events: Sequence[NewEvent],
        *,
        consume_signal: int | None = None,
    ) -> None:
        events = tuple(events)

        def op(conn: sqlite3.Connection) -> None:
            now = self._clock()
            params = fence_params(lease, first_seq, len(events), now)
            fenced(conn, Q["fenced_append"], params, lease, first_seq, events, now)
            if consume_signal is not None:
                cur = conn.execute(
                    Q["consume_signal"],
                    {"seq": first_seq, "id": consume_signal, "run_id": lease.run_id},
                )
                if cur.rowcount != 1:
                    raise StoreError(
                        f"signal {consume_signal} is not an unconsumed signal of run "
                        f"{lease.run_id!r}"
                    )

        await self._write(op)

    async def suspend_run(
        self,
        lease: Lease,
        first_seq: int,
        events: Sequence[NewEvent],
        *,
        wake_at: float | None,
        wake_on_signals: Collection[str] = (),
        wake_on_tasks: Collection[str] = (),
        cancel_delivered: bool = False,
        wake_on_children: Collection[str] = (),
    ) -> None:
        events = tuple(events)
        names = json.dumps(sorted(wake_on_signals))
        commands = json.dumps(sorted(wake_on_tasks))
        child_ids = json.dumps(sorted(wake_on_children))

        def op(conn: sqlite3.Connection) -> None:
            now = self._clock()
            params = fence_params(lease, first_seq, len(events), now)
            params["wake_at"] = wake_at
            params["signal_names"] = names
            params["task_commands"] = commands
            params["cancel_delivered"] = cancel_delivered
            params["child_ids"] = child_ids
            fenced(conn, Q["fenced_suspend"], params, lease, first_seq, events, now)

        await self._write(op, notify=True)

    async def finish_run(
        self,
        lease: Lease,
        first_seq: int,
        events: Sequence[NewEvent],
        *,
        state: RunState,
        result: bytes | None = None,
        error: bytes | None = None,
    ) -> None:
        check_terminal(state)
        events = tuple(events)

        def op(conn: sqlite3.Connection) -> bool:
            now = self._clock()
            params = fence_params(lease, first_seq, len(events), now)
            params.update(state=str(state), result=result, error=error)
            fenced(conn, Q["fenced_finish"], params, lease, first_seq, events, now)
            return close_family(conn, lease.run_id, str(state), now)

        if await self._write(op, notify=True, work=False):
            self._waiters.notify()  # a parent or children became due: claim loops too

    # -- signals and cancellation ------------------------------------------------------

    async def send_signal(
        self, run_id: str, name: str, payload: bytes, *, delivery_id: str | None = None
    ) -> int | None:
        def op(conn: sqlite3.Connection) -> int | None:
            now = self._clock()
            if delivery_id is not None:
                seen = {"run_id": run_id, "delivery_id": delivery_id}
                if conn.execute(Q["signal_delivered"], seen).fetchone() is not None:
                    return None  # a repeat: writes nothing (BEGIN IMMEDIATE serialises)
            tip = run_id
            if conn.execute(Q["wake_for_signal"], {"now": now, "run_id": tip}).rowcount == 0:
                # Ended, or continued-as-new: the live run of its chain gets it.
                tip = chain_tip(conn, run_id, "signal")
                if conn.execute(Q["wake_for_signal"], {"now": now, "run_id": tip}).rowcount == 0:
                    raise RunCancellingError(tip)  # live, so its cancel is pending
            params = {"run_id": tip, "name": name, "payload": payload, "now": now}
            cur = conn.execute(Q["insert_signal"], {**params, "delivery_id": delivery_id})
            assert cur.lastrowid is not None
            return cur.lastrowid

        return await self._write(op, notify=True)

    async def next_signal(self, run_id: str, name: str) -> SignalRecord | None:
        def op(conn: sqlite3.Connection) -> SignalRecord | None:
            row = conn.execute(Q["next_signal"], (run_id, name)).fetchone()
            return None if row is None else _sql.signal_record(row)

        return await self._read(op)

    async def get_idempotent(self, scope: str, key: str) -> bytes | None:
        def op(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(Q["get_idempotent"], (scope, key)).fetchone()
            return None if row is None else bytes(row[0])

        return await self._read(op)

    async def put_idempotent(self, scope: str, key: str, result: bytes) -> bytes:
        def op(conn: sqlite3.Connection) -> bytes:
            conn.execute(Q["put_idempotent"], (scope, key, result, self._clock()))
            row = conn.execute(Q["get_idempotent"], (scope, key)).fetchone()
            return bytes(row[0])

        return await self._write(op)

    async def request_cancel(self, run_id: str, cancelled_event: NewEvent) -> RunState:
        ev = cancelled_event
        target = run_id

        def op(conn: sqlite3.Connection) -> RunState:
            now = self._clock()
            run_id = chain_tip(conn, target, "cancel")  # a continued run: its chain's tip
            row = conn.execute(Q["cancel_row"], (run_id,)).fetchone()
            if row is None:
                raise RunNotFoundError(run_id)
            state, expires, next_seq = RunState(row[0]), row[1], row[2]
            if state.is_terminal:
                raise RunFinishedError(run_id, state.value, "cancel")
            held = state is RunState.RUNNING and expires is not None and expires >= now
            if held or next_seq > 1:  # a worker delivers it; cleanup may run
                conn.execute(Q["cancel_request"], {"now": now, "run_id": run_id})
                return state
            conn.execute(Q["insert_event"], (run_id, next_seq, ev.type, ev.command, ev.data, now))
            conn.execute(Q["cancel_now"], {"now": now, "run_id": run_id})
            close_family(conn, run_id, RunState.CANCELLED.value, now)
            return RunState.CANCELLED

        return await self._write(op, notify=True)

    # -- notifications -------------------------------------------------------------------

    async def wait_for_change(self, timeout: float) -> None:
        """Return after a commit by this store or (polled) by another process, or on timeout."""
        await self._wait(timeout, work=False)

    async def wait_for_work(self, timeout: float) -> None:
        """Like :meth:`wait_for_change`, but a run finishing in this process does not
        wake it: only writes that can make a run claimable, and commits by other
        processes. The worker's claim loop waits here when the store offers it
        (not part of the Store protocol)."""
        await self._wait(timeout, work=True)

    async def _wait(self, timeout: float, *, work: bool) -> None:
        if timeout <= 0:
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.add(loop, fut, work=work)
        try:
            await asyncio.wait([fut], timeout=timeout)
        finally:
            self._waiters.discard(fut)


def _filter_params(where: RunFilter) -> dict[str, object]:
    """The parameters of a :class:`RunFilter` in the list and count queries."""
    return {
        "workflow": where.workflows[0] if where.workflows else None,
        "workflows": json.dumps(where.workflows) if where.workflows else None,
        "states": json.dumps([str(s) for s in where.states]) if where.states else None,
        "since": where.since,
        "until": where.until,
        "parent_run_id": where.parent_run_id,
    }
