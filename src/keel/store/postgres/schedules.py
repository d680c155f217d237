"""Schedules on PostgreSQL (:class:`~keel.store.ports.Schedules`): every operation is
one statement; firing a tick is a compare-and-set that also creates its run."""

from __future__ import annotations

import builtins
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Unpack

from keel.errors import ScheduleExistsError, ScheduleNotFoundError
from keel.store._checks import check_claim_limit, check_fire, check_schedule
from keel.store.base import DueSchedules, NewSchedule, ScheduleRecord, ScheduleTick
from keel.store.postgres._sql import DICT, SCHEDULE, Q, fields, without
from keel.store.postgres.database import PgDatabase
from keel.store.postgres.runs import one_run


@dataclass
class PgSchedules:
    """Cron and one-shot schedules, in a :class:`PgDatabase`."""

    db: PgDatabase

    async def create(self, schedule: NewSchedule) -> ScheduleRecord:
        check_schedule(schedule)
        params = fields(schedule) | {"channel": self.db.channel}
        rows = await self.db.fetch(Q["create_schedule"], params, SCHEDULE)
        if not rows:
            raise ScheduleExistsError(schedule.schedule_id)
        return rows[0]  # type: ignore[no-any-return]

    async def get(self, schedule_id: str) -> ScheduleRecord | None:
        rows = await self._select(schedule_id=schedule_id)
        return rows[0] if rows else None

    async def list(self, *, workflow: str | None = None) -> builtins.list[ScheduleRecord]:
        return await self._select(workflow=workflow)

    async def pause(self, schedule_id: str) -> ScheduleRecord:
        return await self._set_paused(schedule_id, True, None)

    async def resume(self, schedule_id: str, next_fire_at: float | None) -> ScheduleRecord:
        return await self._set_paused(schedule_id, False, next_fire_at)

    async def delete(self, schedule_id: str) -> None:
        if not await self.db.fetch(Q["delete_schedule"], {"schedule_id": schedule_id}):
            raise ScheduleNotFoundError(schedule_id)

    async def due(self, workflows: Collection[str], *, limit: int) -> DueSchedules:
        check_claim_limit(limit)
        params = {"workflows": sorted(set(workflows)), "limit": limit}
        rows = await self.db.fetch_clocked(Q["due_schedules"], params, DICT)
        due = [
            ScheduleRecord(**without(r, "now", "next_at"))
            for r in rows
            if r["schedule_id"] is not None
        ]
        return DueSchedules(rows[0]["now"], due, rows[0]["next_at"])

    async def fire(self, schedule_id: str, **tick: Unpack[ScheduleTick]) -> bool:
        check_fire(tick["expected"], tick["tick"])
        run = tick["run"]
        params: dict[str, Any] = {
            "schedule_id": schedule_id,
            "expected": tick["expected"],
            "tick": tick["tick"],
            "next_fire_at": tick["next_fire_at"],
            "fired_tick": None if run is None else tick["tick"],
        }
        params |= one_run(run, self.db.channel)  # no run: the tick is skipped
        return bool(await self.db.write(Q["fire_schedule"], params))

    async def _select(self, **where: str | None) -> builtins.list[ScheduleRecord]:
        params = {"schedule_id": None, "workflow": None} | where
        return await self.db.fetch(Q["get_schedules"], params, SCHEDULE)

    async def _set_paused(
        self, schedule_id: str, paused: bool, next_fire_at: float | None
    ) -> ScheduleRecord:
        params = {
            "schedule_id": schedule_id,
            "paused": paused,
            "next_fire_at": next_fire_at,
            "channel": self.db.channel,
        }
        rows = await self.db.fetch(Q["set_paused"], params, SCHEDULE)
        if not rows:
            raise ScheduleNotFoundError(schedule_id)
        return rows[0]  # type: ignore[no-any-return]
