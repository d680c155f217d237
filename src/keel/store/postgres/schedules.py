"""Schedules in the PostgreSQL store (see :class:`SchedulesMixin`)."""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from keel.errors import ScheduleExistsError, ScheduleNotFoundError
from keel.store._checks import check_claim_limit, check_fire, check_schedule
from keel.store.base import DueSchedules, NewRun, NewSchedule, ScheduleRecord
from keel.store.postgres import _conn, _sql
from keel.store.postgres._writes import _Row


class SchedulesMixin:
    """:class:`~keel.store.postgres.PostgresStore`'s schedules: every operation is
    one statement; firing a tick is a compare-and-set that also creates its run."""

    # Set up by PostgresStore.
    channel: str
    _clock: _conn.ClockOffset

    if TYPE_CHECKING:  # provided by PostgresStore and GroupCommitMixin

        async def _fetch(self, query: str, params: dict[str, Any]) -> list[_Row]: ...

        async def _write(self, query: str, params: dict[str, Any]) -> list[_Row]: ...

    async def create_schedule(self, schedule: NewSchedule) -> ScheduleRecord:
        check_schedule(schedule)
        params = {
            "schedule_id": schedule.schedule_id,
            "workflow": schedule.workflow,
            "input": schedule.input,
            "cron": schedule.cron,
            "at": schedule.at,
            "timezone": schedule.timezone,
            "next_fire_at": schedule.next_fire_at,
            "overlap": schedule.overlap,
            "catchup_window": schedule.catchup_window,
            "channel": self.channel,
        }
        rows = await self._fetch("create_schedule", params)
        if not rows:
            raise ScheduleExistsError(schedule.schedule_id)
        return _sql.schedule_record(rows[0])

    async def get_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        rows = await self._fetch("get_schedule", {"schedule_id": schedule_id})
        return _sql.schedule_record(rows[0]) if rows else None

    async def list_schedules(self, *, workflow: str | None = None) -> list[ScheduleRecord]:
        rows = await self._fetch("list_schedules", {"workflow": workflow})
        return [_sql.schedule_record(r) for r in rows]

    async def pause_schedule(self, schedule_id: str) -> ScheduleRecord:
        rows = await self._fetch("pause_schedule", {"schedule_id": schedule_id})
        if not rows:
            raise ScheduleNotFoundError(schedule_id)
        return _sql.schedule_record(rows[0])

    async def resume_schedule(self, schedule_id: str, next_fire_at: float | None) -> ScheduleRecord:
        params = {
            "schedule_id": schedule_id,
            "next_fire_at": next_fire_at,
            "channel": self.channel,
        }
        rows = await self._fetch("resume_schedule", params)
        if not rows:
            raise ScheduleNotFoundError(schedule_id)
        return _sql.schedule_record(rows[0])

    async def delete_schedule(self, schedule_id: str) -> None:
        if not await self._fetch("delete_schedule", {"schedule_id": schedule_id}):
            raise ScheduleNotFoundError(schedule_id)

    async def due_schedules(self, workflows: Collection[str], *, limit: int) -> DueSchedules:
        check_claim_limit(limit)
        params = {"workflows": sorted(set(workflows)), "limit": limit}
        sent = time.time()
        rows = await self._fetch("due_schedules", params)
        self._clock.observe(rows[0][0], sent, time.time())
        due = [_sql.schedule_record(r, offset=2) for r in rows if r[2] is not None]
        return DueSchedules(rows[0][0], due, rows[0][1])

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
        params: dict[str, Any] = {
            "schedule_id": schedule_id,
            "expected": expected,
            "tick": tick,
            "next_fire_at": next_fire_at,
            "fired_tick": None if run is None else tick,
            "run_id": None,
            "workflow": None,
            "version": None,
            "input": None,
            "type": None,
            "command": None,
            "data": None,
            "channel": self.channel,
        }
        if run is not None:
            params |= {
                "run_id": run.run_id,
                "workflow": run.workflow,
                "version": run.version,
                "input": run.input,
                "type": run.started.type,
                "command": run.started.command,
                "data": run.started.data,
            }
        return bool(await self._write("fire_schedule", params))
