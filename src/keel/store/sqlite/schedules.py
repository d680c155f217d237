"""The SQLite store's schedules: a mixin of :class:`SQLiteStore`.

Firing is one write transaction (``BEGIN IMMEDIATE``, so processes sharing the
file take turns): the compare-and-set on ``next_fire_at``, then the tick's run.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any, TypeVar

from keel.errors import ScheduleExistsError, ScheduleNotFoundError
from keel.store._checks import check_claim_limit, check_fire, check_schedule
from keel.store.base import DueSchedules, NewRun, NewSchedule, ScheduleRecord
from keel.store.sqlite import _sql
from keel.store.sqlite._threads import ChangeWaiters
from keel.store.sqlite.children import insert_params

T = TypeVar("T")
Q = _sql.queries()


class SQLiteSchedules:
    """The schedule methods of :class:`~keel.store.sqlite.store.SQLiteStore`."""

    _clock: Callable[[], float]
    _waiters: ChangeWaiters

    if TYPE_CHECKING:  # defined by SQLiteStore

        async def _write(
            self,
            op: Callable[[sqlite3.Connection], T],
            *,
            notify: bool = False,
            work: bool = True,
        ) -> T: ...

        async def _read(self, op: Callable[[sqlite3.Connection], T]) -> T: ...

    async def create_schedule(self, schedule: NewSchedule) -> ScheduleRecord:
        check_schedule(schedule)
        params: dict[str, Any] = {
            "schedule_id": schedule.schedule_id,
            "workflow": schedule.workflow,
            "input": schedule.input,
            "cron": schedule.cron,
            "at": schedule.at,
            "timezone": schedule.timezone,
            "next_fire_at": schedule.next_fire_at,
            "overlap": schedule.overlap,
            "catchup_window": schedule.catchup_window,
        }

        def op(conn: sqlite3.Connection) -> ScheduleRecord:
            rows = conn.execute(Q["insert_schedule"], params | {"now": self._clock()}).fetchall()
            if not rows:
                raise ScheduleExistsError(schedule.schedule_id)
            return _sql.schedule_record(rows[0])

        # Notify: schedule loops sleeping until a later tick re-read theirs.
        return await self._write(op, notify=True)

    async def get_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        def op(conn: sqlite3.Connection) -> ScheduleRecord | None:
            row = conn.execute(Q["get_schedule"], (schedule_id,)).fetchone()
            return None if row is None else _sql.schedule_record(row)

        return await self._read(op)

    async def list_schedules(self, *, workflow: str | None = None) -> list[ScheduleRecord]:
        def op(conn: sqlite3.Connection) -> list[ScheduleRecord]:
            rows = conn.execute(Q["list_schedules"], {"workflow": workflow})
            return [_sql.schedule_record(r) for r in rows]

        return await self._read(op)

    def _changed(self, conn: sqlite3.Connection, schedule_id: str) -> ScheduleRecord:
        """The schedule after an update in this transaction; raise if there is none."""
        row = conn.execute(Q["get_schedule"], (schedule_id,)).fetchone()
        if row is None:
            raise ScheduleNotFoundError(schedule_id)
        return _sql.schedule_record(row)

    async def pause_schedule(self, schedule_id: str) -> ScheduleRecord:
        def op(conn: sqlite3.Connection) -> ScheduleRecord:
            params = {"schedule_id": schedule_id, "now": self._clock()}
            conn.execute(Q["pause_schedule"], params)
            return self._changed(conn, schedule_id)

        return await self._write(op)

    async def resume_schedule(self, schedule_id: str, next_fire_at: float | None) -> ScheduleRecord:
        def op(conn: sqlite3.Connection) -> ScheduleRecord:
            params = {"schedule_id": schedule_id, "next_fire_at": next_fire_at}
            conn.execute(Q["resume_schedule"], params | {"now": self._clock()})
            return self._changed(conn, schedule_id)

        return await self._write(op, notify=True)

    async def delete_schedule(self, schedule_id: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            if conn.execute(Q["delete_schedule"], (schedule_id,)).rowcount == 0:
                raise ScheduleNotFoundError(schedule_id)

        await self._write(op)

    async def due_schedules(self, workflows: Collection[str], *, limit: int) -> DueSchedules:
        check_claim_limit(limit)
        names = json.dumps(sorted(set(workflows)))

        # On the reader: idle schedule loops never take the file's write lock.
        def op(conn: sqlite3.Connection) -> DueSchedules:
            now = self._clock()
            params = {"now": now, "workflows": names, "limit": limit}
            due = [_sql.schedule_record(r) for r in conn.execute(Q["due_schedules"], params)]
            [(earliest,)] = conn.execute(Q["next_schedule"], {"workflows": names}).fetchall()
            return DueSchedules(now, due, earliest)

        return await self._read(op)

    async def fire_schedule(
        self,
        schedule_id: str,
        *,
        expected: float,
        tick: float,
        next_fire_at: float | None,
        run: NewRun | None,
    ) -> bool:
        check_fire(expected, tick)

        def op(conn: sqlite3.Connection) -> bool:
            now = self._clock()
            params = {
                "schedule_id": schedule_id,
                "expected": expected,
                "tick": tick,
                "next_fire_at": next_fire_at,
                "fired_tick": None if run is None else tick,
                "run_id": None if run is None else run.run_id,
                "now": now,
            }
            if not conn.execute(Q["fire_schedule"], params).fetchall():
                return False  # another worker fired it, or it was paused, moved or deleted
            if run is not None:
                _insert_pending_run(conn, run, now)
            return True

        fired = await self._write(op)
        if fired:
            self._waiters.notify()  # a new run is due
        return fired


def _insert_pending_run(conn: sqlite3.Connection, run: NewRun, now: float) -> None:
    """Insert a due run and its started event, as create_run does; an existing id is kept."""
    params = insert_params(run, now, lease_owner=None, expires=None)
    if conn.execute(Q["insert_run"], params).fetchall():
        started = run.started
        conn.execute(
            Q["insert_event"], (run.run_id, 0, started.type, started.command, started.data, now)
        )
