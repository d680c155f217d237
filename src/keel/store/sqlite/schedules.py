"""Cron and one-shot schedules on SQLite (:class:`keel.store.ports.Schedules`).

Firing is one write transaction (``BEGIN IMMEDIATE``, so processes sharing the
file take turns): the compare-and-set on ``next_fire_at``, then the tick's run.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
from collections.abc import Collection
from typing import Unpack

from keel.errors import ScheduleExistsError, ScheduleNotFoundError
from keel.store._checks import check_claim_limit, check_fire, check_schedule
from keel.store.base import DueSchedules, NewSchedule, ScheduleRecord, ScheduleTick
from keel.store.sqlite._db import Capability
from keel.store.sqlite._journal import insert_run
from keel.store.sqlite._rows import params_of, schedule_record
from keel.store.sqlite._sql import Q


class SQLiteSchedules(Capability):
    """:class:`~keel.store.ports.Schedules` of :class:`~keel.store.sqlite.store.SQLiteStore`."""

    async def create(self, schedule: NewSchedule) -> ScheduleRecord:
        check_schedule(schedule)
        params = params_of(schedule)

        def op(conn: sqlite3.Connection) -> ScheduleRecord:
            now = self._db.clock()
            created = schedule_record.one(conn.execute(Q["insert_schedule"], params | {"now": now}))
            if created is None:
                raise ScheduleExistsError(schedule.schedule_id)
            return created

        # Notify: schedule loops sleeping until a later tick re-read theirs.
        return await self._db.write(op, notify=True)

    async def get(self, schedule_id: str) -> ScheduleRecord | None:
        return await self._db.read_one(Q["get_schedule"], (schedule_id,), schedule_record)

    async def list(self, *, workflow: str | None = None) -> builtins.list[ScheduleRecord]:
        return await self._db.read_all(Q["list_schedules"], {"workflow": workflow}, schedule_record)

    async def pause(self, schedule_id: str) -> ScheduleRecord:
        return await self._change("pause_schedule", schedule_id)

    async def resume(self, schedule_id: str, next_fire_at: float | None) -> ScheduleRecord:
        return await self._change("resume_schedule", schedule_id, next_fire_at=next_fire_at)

    async def delete(self, schedule_id: str) -> None:
        await self._change("delete_schedule", schedule_id)

    async def _change(self, query: str, schedule_id: str, **params: float | None) -> ScheduleRecord:
        """Run ``query`` on the schedule; the schedule afterwards (as it was, for a
        delete). ``ScheduleNotFoundError`` if there is none."""

        def op(conn: sqlite3.Connection) -> ScheduleRecord:
            before = schedule_record.one(conn.execute(Q["get_schedule"], (schedule_id,)))
            if before is None:
                raise ScheduleNotFoundError(schedule_id)
            now = self._db.clock()
            if conn.execute(Q[query], params | {"schedule_id": schedule_id, "now": now}).rowcount:
                return (
                    schedule_record.one(conn.execute(Q["get_schedule"], (schedule_id,))) or before
                )
            return before

        # Notify on resume: a schedule loop sleeping past its next tick re-reads it.
        return await self._db.write(op, notify=query == "resume_schedule")

    async def due(self, workflows: Collection[str], *, limit: int) -> DueSchedules:
        check_claim_limit(limit)
        names = json.dumps(sorted(set(workflows)))

        # On the reader: idle schedule loops never take the file's write lock.
        def op(conn: sqlite3.Connection) -> DueSchedules:
            now = self._db.clock()
            params = {"now": now, "workflows": names, "limit": limit}
            due = schedule_record.all(conn.execute(Q["due_schedules"], params))
            earliest = conn.execute(Q["next_schedule"], {"workflows": names}).fetchone()
            return DueSchedules(now, due, earliest["earliest"])

        return await self._db.read(op)

    async def fire(self, schedule_id: str, **tick: Unpack[ScheduleTick]) -> bool:
        check_fire(tick["expected"], tick["tick"])
        run = tick["run"]

        def op(conn: sqlite3.Connection) -> bool:
            now = self._db.clock()
            params = tick | {
                "schedule_id": schedule_id,
                "fired_tick": None if run is None else tick["tick"],
                "run_id": None if run is None else run.run_id,
                "now": now,
            }
            if conn.execute(Q["fire_schedule"], params).fetchone() is None:
                return False  # another worker fired it, or it was paused, moved or deleted
            if run is not None:
                insert_run(conn, run, now)  # as runs.create does; an existing id is kept
            return True

        fired = await self._db.write(op)
        if fired:
            self._db.waiters.notify()  # a new run is due
        return fired
