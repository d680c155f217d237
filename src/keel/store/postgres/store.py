"""The PostgreSQL store: one database shared by many workers on many machines.

Every operation is one statement on a pooled connection in autocommit mode:
one round trip, one transaction (a lone write uses a connection of its own,
sparing the pool checkout). Run writes that arrive while another batch of
them is in flight are group-committed: sent together in one pipeline, one
transaction, one WAL flush (see :mod:`keel.store.postgres._writes`). Fenced
writes put the fence in the statement itself (see queries.sql), so a stale write
changes nothing; only when it matches nothing does a second query find out
why. All time comparisons use the database clock; :meth:`PostgresStore.now`
estimates it without a round trip.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from keel.core.states import RunState
from keel.errors import (
    ConfigurationError,
    LeaseLostError,
    RunCancellingError,
    StoreError,
)
from keel.store._checks import (
    check_limit,
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
from keel.store.postgres import _conn, _schema, _sql
from keel.store.postgres._listener import ChangeWaiters, Listener
from keel.store.postgres._writes import GroupCommitMixin, Q, _Conn, _Queued, _Row
from keel.store.postgres.children import ChildrenMixin
from keel.store.postgres.continuing import ContinueMixin
from keel.store.postgres.liveness import LivenessMixin
from keel.store.postgres.schedules import SchedulesMixin
from keel.store.postgres.snapshots import SnapshotsMixin
from keel.store.postgres.tasks import TasksMixin
from keel.store.postgres.versions import VersionsMixin


class PostgresStore(
    TasksMixin,
    SchedulesMixin,
    ChildrenMixin,
    ContinueMixin,
    SnapshotsMixin,
    LivenessMixin,
    VersionsMixin,
    GroupCommitMixin,
):
    """Keel store in a PostgreSQL database, in its own schema (default ``keel``).

    ``min_size``/``max_size`` bound the connection pool (one more connection
    LISTENs for wake-ups, and one runs writes that arrive alone). Migrations
    run on :meth:`open` unless ``auto_migrate=False`` (then use
    :meth:`migrate`, or :meth:`migration_sql` for a DBA). A connection attempt gives up after
    ``connect_timeout`` seconds and an operation waits at most ``pool_timeout``
    seconds for a free connection; either raises :class:`StoreError`.
    A statement that has not completed after ``statement_timeout`` seconds
    (waiting for a lock, or stuck sending a large value) fails with
    :class:`StoreError` and its transaction is rolled back, releasing its row
    locks; keep it at most the workers' ``lease_ttl`` (the default equals the
    default ``lease_ttl``) so a stuck worker's runs fall to another worker
    once their lease expires. Schema migrations are not bounded.
    The store belongs to the event loop that opened it.
    """

    #: The schema version this code creates and understands.
    LATEST_SCHEMA = _sql.latest_version()

    def __init__(
        self,
        url: str,
        *,
        schema: str = "keel",
        min_size: int = 1,
        max_size: int = 10,
        auto_migrate: bool = True,
        connect_timeout: float = 5.0,
        pool_timeout: float = 10.0,
        application_name: str = "keel",
        statement_timeout: float = 30.0,
    ) -> None:
        if not isinstance(url, str) or not url.strip():
            raise ConfigurationError(f"PostgreSQL URL must be a non-empty string, not {url!r}")
        if not 1 <= min_size <= max_size:
            raise ConfigurationError(
                f"need 1 <= min_size <= max_size, not min_size={min_size}, max_size={max_size}"
            )
        if not (connect_timeout > 0 and pool_timeout > 0):
            raise ConfigurationError("connect_timeout and pool_timeout must be positive")
        if isinstance(statement_timeout, bool) or not (
            isinstance(statement_timeout, int | float) and 0 < statement_timeout < math.inf
        ):
            raise ConfigurationError(
                f"statement_timeout must be a positive number of seconds, not {statement_timeout!r}"
            )
        self.url = url
        self.schema = _conn.check_schema(schema)
        self.channel = f"{schema}.changes"  # NOTIFY channel of every Keel write worth waking for
        self.auto_migrate = auto_migrate
        self._kwargs, self._target = _conn.connection_params(
            url,
            schema=schema,
            connect_timeout=connect_timeout,
            application_name=application_name,
            statement_timeout=statement_timeout,
        )
        # Migrations may rightly run longer than any statement on the hot path.
        self._admin_kwargs, _ = _conn.connection_params(
            url, schema=schema, connect_timeout=connect_timeout, application_name=application_name
        )
        self.statement_timeout = float(statement_timeout)
        self._min_size, self._max_size = min_size, max_size
        self._connect_timeout = connect_timeout
        self._pool_timeout = pool_timeout
        self._clock = _conn.ClockOffset()
        self._waiters = ChangeWaiters()  # wait_for_change: woken by every notification
        self._work_waiters = ChangeWaiters()  # wait_for_work: not by runs finishing
        self._schedule_waiters = ChangeWaiters()  # wait_for_schedules: by schedule changes
        self._opening: asyncio.Task[None] | None = None
        self._pool: AsyncConnectionPool[_Conn] | None = None
        self._listener: Listener | None = None
        # Group commit: writes queued here while a batch is in flight go out
        # together in the next one (see GroupCommitMixin._write).
        self._queue: list[_Queued] = []
        self._flushers: set[asyncio.Task[None]] = set()
        self._inline = False  # a lone write runs in its caller's task...
        self._solo: _Conn | None = None  # ...on this connection (see _solo_write)

    def __repr__(self) -> str:
        return f"PostgresStore({self._target!r}, schema={self.schema!r})"

    # -- lifecycle ---------------------------------------------------------------

    async def open(self) -> None:
        """Connect, check (and migrate) the schema, start the pool and the listener. Idempotent."""
        if self._opening is None:
            self._opening = asyncio.get_running_loop().create_task(self._open())
        opening = self._opening
        try:
            # Shielded: one caller giving up must not cancel the others' open.
            await asyncio.shield(opening)
        except BaseException:
            if opening.done() and self._opening is opening:
                self._opening = None  # a later open() tries again
            raise

    async def _open(self) -> None:
        conn = await self._connect(admin=True)
        listener = Listener(
            self._connect,
            self.channel,
            self._waiters,
            self._work_waiters,
            self._schedule_waiters,
        )
        try:
            with self._errors():
                await _schema.prepare(
                    conn, self.schema, self._target, auto_migrate=self.auto_migrate
                )
                for _ in range(3):
                    await self._sample_clock(conn)
                await listener.start(conn)  # the listener owns conn from here on
        except BaseException:
            await conn.close()
            raise
        pool: AsyncConnectionPool[_Conn] = AsyncConnectionPool(
            self.url,
            kwargs=self._kwargs,
            min_size=self._min_size,
            max_size=self._max_size,
            open=False,
            timeout=self._pool_timeout,
            name=f"keel-{self.schema}",
            # No check callback: a per-checkout ping would double the round trips
            # of every step. _connection() spots dead connections locally instead.
        )
        try:
            with self._errors():
                await pool.open(wait=True, timeout=self._connect_timeout + self._pool_timeout)
        except BaseException:
            await listener.stop()
            await pool.close()
            raise
        self._pool, self._listener = pool, listener

    async def close(self) -> None:
        """Stop the listener and close every connection. Idempotent."""
        opening, self._opening = self._opening, None
        if opening is not None and not opening.done():
            opening.cancel()
        if opening is not None:
            await asyncio.gather(opening, return_exceptions=True)
        if self._flushers:  # let batches in flight finish: their callers await them
            await asyncio.gather(*self._flushers, return_exceptions=True)
        pool, listener = self._pool, self._listener
        self._pool = self._listener = None
        self._waiters.wake_all()  # nobody should sit out a timeout on a closed store
        self._work_waiters.wake_all()
        self._schedule_waiters.wake_all()
        solo, self._solo = self._solo, None
        if solo is not None:
            await solo.close()
        if listener is not None:
            await listener.stop()
        if pool is not None:
            await pool.close()

    async def now(self) -> float:
        # No round trip: the offset is refreshed by the claims and renewals that happen anyway.
        return self._clock.now()

    async def migrate(self) -> list[int]:
        """Apply pending migrations (the store need not be open); return the versions applied."""
        conn = await self._connect(admin=True)
        try:
            with self._errors():
                return await _schema.migrate(conn, self.schema, self._target)
        finally:
            await conn.close()

    async def schema_version(self) -> int:
        """The database's Keel schema version (0: none yet); see also :attr:`LATEST_SCHEMA`."""
        conn = await self._connect()
        try:
            with self._errors():
                return await _schema.schema_version(conn, self.schema, self._target)
        finally:
            await conn.close()

    async def migration_sql(self, pending_only: bool = True) -> str:
        """The SQL of the pending (or all) migrations, for ``keel db migrate --print``."""
        version = await self.schema_version() if pending_only else 0
        return _schema.migration_script(self.schema, version)

    # -- connections ---------------------------------------------------------------

    async def _connect(self, *, admin: bool = False) -> _Conn:
        """A new connection outside the pool (schema work, the listener, lone writes);
        ``admin``: without the statement timeout, for migrations."""
        kwargs = self._admin_kwargs if admin else self._kwargs
        with self._errors():
            return await psycopg.AsyncConnection.connect(self.url, **kwargs)

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[_Conn]:
        pool = self._pool
        if pool is None:
            raise StoreError(f"{self!r} is not open")
        with self._errors():
            for _ in range(self._max_size + 1):
                conn = await pool.getconn()
                if not _conn.is_dead(conn):
                    break
                # Killed while idle (server restart): closed, the pool replaces it.
                await conn.close()
                await pool.putconn(conn)
            else:
                raise StoreError(f"every pooled connection to {self._target} is broken")
            try:
                yield conn
            finally:
                await pool.putconn(conn)

    def _errors(self) -> _ErrorMapper:
        return _ErrorMapper(self._target)

    async def _fetch(self, query: str, params: dict[str, Any]) -> list[_Row]:
        async with self._connection() as conn:
            cur = await conn.execute(Q[query], params, binary=True)
            return await cur.fetchall()

    async def _sample_clock(self, conn: _Conn) -> None:
        sent = time.time()
        cur = await conn.execute(Q["now"], prepare=False)
        row = await cur.fetchone()
        assert row is not None
        self._clock.observe(row[0], sent, time.time())

    # -- runs ----------------------------------------------------------------------

    async def create_run(
        self, run: NewRun, *, lease_owner: str | None = None, lease_ttl: float = 30.0
    ) -> tuple[RunRecord, Lease | None, bool]:
        started = run.started
        params: dict[str, Any] = {
            "run_id": run.run_id,
            "workflow": run.workflow,
            "version": run.version,
            "input": run.input,
            "type": started.type,
            "command": started.command,
            "data": started.data,
        }
        record: RunRecord | None = None
        lease: Lease | None = None
        if lease_owner is None:
            rows = await self._write("create_run", params | {"channel": self.channel})
            if rows:
                now = rows[0][0]
                record = _new_record(run, RunState.PENDING, now, wake_at=now)
        else:
            check_ttl(lease_ttl)
            params |= {"owner": lease_owner, "ttl": lease_ttl}
            rows = await self._write("create_leased_run", params)
            if rows:
                now, token, expires = rows[0]
                lease = Lease(run.run_id, lease_owner, token, expires)
                record = _new_record(run, RunState.RUNNING, now, lease=lease)
        if record is not None:
            return record, lease, True
        # It exists (perhaps committed by a concurrent create a moment ago): write nothing.
        existing = await self.get_run(run.run_id)
        if existing is None:
            raise StoreError(f"run {run.run_id!r} exists but could not be read back")
        return existing, None, False

    async def get_run(self, run_id: str) -> RunRecord | None:
        rows = await self._fetch("get_run", {"run_id": run_id})
        return _sql.run_record(rows[0]) if rows else None

    async def get_runs(self, run_ids: Collection[str]) -> dict[str, RunRecord]:
        if not run_ids:
            return {}
        rows = await self._fetch("get_runs", {"run_ids": sorted(set(run_ids))})
        return {r.run_id: r for r in map(_sql.run_record, rows)}

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
        query = "list_runs_by_workflow" if len(where.workflows) == 1 else "list_runs"
        return page_of([_sql.run_record(r) for r in await self._fetch(query, params)], limit)

    async def count_runs(
        self,
        *,
        workflow: str | Collection[str] | None = None,
        state: RunState | Collection[RunState] | None = None,
        since: float | None = None,
        until: float | None = None,
        parent_run_id: str | None = None,
    ) -> int:
        where = run_filter(workflow, state, since, until, parent_run_id)
        rows = await self._fetch("count_runs", _filter_params(where))
        return int(rows[0][0])

    async def load_events(self, run_id: str, *, after_seq: int = -1) -> list[EventRecord]:
        rows = await self._fetch("load_events", {"run_id": run_id, "after_seq": after_seq})
        return [_sql.event_record(r) for r in rows]

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
        params = {"owner": owner, "limit": limit, "ttl": ttl, "versions": versions_json(versions)}
        sent = time.time()
        rows = await self._fetch("claim_runs", params)
        self._clock.observe(rows[0][0], sent, time.time())
        claimed = []
        for row in rows:
            if row[1] is None:  # the clock-only row: nothing was claimable
                continue
            run = _sql.run_record(row, offset=1)
            assert run.lease_expires_at is not None
            claimed.append(
                Claimed(Lease(run.run_id, owner, run.lease_token, run.lease_expires_at), run)
            )
        return claimed

    async def renew_leases(self, owner: str, leases: Sequence[Lease], ttl: float) -> RenewOutcome:
        check_ttl(ttl)
        if self._pool is None:
            raise StoreError(f"{self!r} is not open")
        if not leases:
            return RenewOutcome(self._clock.now() + ttl, frozenset(), frozenset())
        mine = [lease for lease in leases if lease.owner == owner]
        params = {
            "owner": owner,
            "ttl": ttl,
            "run_ids": [lease.run_id for lease in mine],
            "tokens": [lease.token for lease in mine],
        }
        sent = time.time()
        [(db_now, expires, renewed, cancel)] = await self._fetch("renew_leases", params)
        self._clock.observe(db_now, sent, time.time())
        lost = {lease.run_id for lease in leases} - set(renewed)
        return RenewOutcome(expires, frozenset(lost), frozenset(cancel))

    # -- fenced journal writes -------------------------------------------------------

    def _fence(self, lease: Lease, first_seq: int, events: Sequence[NewEvent]) -> dict[str, Any]:
        params: dict[str, Any] = {
            "run_id": lease.run_id,
            "token": lease.token,
            "owner": lease.owner,
            "first_seq": first_seq,
            "n": len(events),
            "channel": self.channel,
        }
        if len(events) == 1:  # the common case: scalars, for the "<query>.1" variant
            [event] = events
            params |= {"type": event.type, "command": event.command, "data": event.data}
        else:
            params |= {
                "types": [e.type for e in events],
                "commands": [e.command for e in events],
                "datas": [e.data for e in events],
            }
        return params

    @staticmethod
    def _journal_query(name: str, events: Sequence[NewEvent]) -> str:
        """``name``, or its one-event variant (see _sql.queries) matching :meth:`_fence`."""
        return f"{name}.1" if len(events) == 1 else name

    async def append_events(
        self,
        lease: Lease,
        first_seq: int,
        events: Sequence[NewEvent],
        *,
        consume_signal: int | None = None,
    ) -> None:
        params = self._fence(lease, first_seq, events) | {"signal_id": consume_signal}
        if not await self._write(self._journal_query("append_events", events), params):
            raise await self._fence_error(lease, first_seq, consume_signal)

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
        params = self._fence(lease, first_seq, events)
        params |= {
            "wake_at": wake_at,
            "signal_names": sorted(wake_on_signals),
            "task_commands": sorted(wake_on_tasks),
            "cancel_delivered": cancel_delivered,
            "child_ids": sorted(wake_on_children),
        }
        if not await self._write(self._journal_query("suspend_run", events), params):
            raise await self._fence_error(lease, first_seq, None)

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
        if not RunState(state).is_terminal:
            raise ValueError(f"finish_run needs a terminal state, not {state!s}")
        params = self._fence(lease, first_seq, events)
        params |= {"state": str(state), "result": result, "error": error}
        if not await self._write(self._journal_query("finish_run", events), params):
            raise await self._fence_error(lease, first_seq, None)

    async def _fence_error(self, lease: Lease, first_seq: int, signal: int | None) -> StoreError:
        """Why a fenced write matched no row: a lost lease, a seq mismatch or a used signal."""
        rows = await self._fetch("fence_row", {"run_id": lease.run_id, "signal_id": signal})
        if not rows:
            return LeaseLostError(lease.run_id, lease.token, "the run does not exist")
        state, owner, token, expires_at, next_seq, now, signal_ok = rows[0]
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
        elif signal is not None and not signal_ok:
            return StoreError(
                f"signal {signal} is not an unconsumed signal of run {lease.run_id!r}"
            )
        else:  # it changed back between the two queries (renewed at the last moment?)
            return StoreError(f"fenced write to run {lease.run_id!r} matched no row; retry it")
        return LeaseLostError(lease.run_id, lease.token, detail)

    # -- signals and cancellation ------------------------------------------------------

    async def send_signal(
        self, run_id: str, name: str, payload: bytes, *, delivery_id: str | None = None
    ) -> int | None:
        params = {
            "run_id": run_id,
            "name": name,
            "payload": payload,
            "delivery_id": delivery_id,
            "channel": self.channel,
        }
        for _ in range(10):
            rows = await self._fetch("send_signal", params)
            if rows:
                cancelling, seen, sid = rows[0]
                if seen or (sid is None and not cancelling):  # a repeat (maybe concurrent)
                    return None
                if sid is None:
                    raise RunCancellingError(str(params["run_id"]))
                return int(sid)
            if delivery_id is not None:  # a repeat to a run that has ended since?
                seen_rows = await self._fetch(
                    "signal_delivered", {"run_id": run_id, "delivery_id": delivery_id}
                )
                if seen_rows:
                    return None
            # Ended or continued-as-new: its chain's live tip (raises if none).
            params["run_id"] = await self._chain_tip(run_id, "signal")
        raise StoreError(f"could not signal run {run_id!r}: it keeps changing")

    async def next_signal(self, run_id: str, name: str) -> SignalRecord | None:
        rows = await self._fetch("next_signal", {"run_id": run_id, "name": name})
        return _sql.signal_record(rows[0]) if rows else None

    async def request_cancel(self, run_id: str, cancelled_event: NewEvent) -> RunState:
        ev = cancelled_event
        params = {
            "run_id": run_id,
            "type": ev.type,
            "command": ev.command,
            "data": ev.data,
            "channel": self.channel,
        }
        for _ in range(10):
            rows = await self._fetch("request_cancel", params)
            if rows:
                return RunState(rows[0][0])
            params["run_id"] = await self._chain_tip(run_id, "cancel")
        raise StoreError(f"could not cancel run {run_id!r}: it keeps changing")

    # -- notifications -------------------------------------------------------------------

    async def wait_for_change(self, timeout: float) -> None:
        """Return on a NOTIFY from any Keel write to this schema, or after ``timeout``."""
        if timeout <= 0:
            return
        await self._waiters.wait(timeout)

    async def wait_for_work(self, timeout: float) -> None:
        """Like :meth:`wait_for_change`, but runs finishing do not wake it (claim loops
        wait here: a finished run makes nothing claimable; capacity freed in this
        process wakes the worker's claim loop directly)."""
        if timeout <= 0:
            return
        await self._work_waiters.wait(timeout)

    async def wait_for_schedules(self, timeout: float) -> None:
        """Return when a schedule is created or resumed (or the listener reconnects),
        or after ``timeout``: schedule loops wait here, not woken by every run."""
        if timeout <= 0:
            return
        await self._schedule_waiters.wait(timeout)


class _ErrorMapper:
    """``with``-block turning psycopg errors into :class:`StoreError` (Keel's pass through)."""

    __slots__ = ("_target",)

    def __init__(self, target: str) -> None:
        self._target = target

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, psycopg.Error):
            raise _conn.store_error(exc, self._target) from exc


def _new_record(
    run: NewRun,
    state: RunState,
    now: float,
    *,
    wake_at: float | None = None,
    lease: Lease | None = None,
) -> RunRecord:
    """The row create_run just inserted, without reading it back."""
    return RunRecord(
        run_id=run.run_id,
        workflow=run.workflow,
        version=run.version,
        state=state,
        input=run.input,
        result=None,
        error=None,
        created_at=now,
        updated_at=now,
        wake_at=wake_at,
        lease_owner=None if lease is None else lease.owner,
        lease_token=0 if lease is None else lease.token,
        lease_expires_at=None if lease is None else lease.expires_at,
        cancel_requested=False,
        next_seq=1,
        parent_run_id=run.parent_run_id,
        parent_close=run.parent_close,
        depth=run.depth,
    )


def _filter_params(where: RunFilter) -> dict[str, Any]:
    """The parameters of a :class:`RunFilter` in the list and count queries."""
    return {
        "workflow": where.workflows[0] if where.workflows else None,
        "workflows": list(where.workflows) or None,
        "states": [str(s) for s in where.states] or None,
        "since": where.since,
        "until": where.until,
        "parent_run_id": where.parent_run_id,
    }
