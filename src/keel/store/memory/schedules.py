"""The in-memory store's schedules (:class:`~keel.store.ports.Schedules`): a fire
is one atomic compare-and-set under the tables' lock."""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Collection
from typing import Unpack

from keel.errors import ScheduleExistsError, ScheduleNotFoundError
from keel.store._checks import check_claim_limit, check_fire, check_schedule
from keel.store.base import DueSchedules, NewSchedule, ScheduleRecord, ScheduleTick
from keel.store.memory.tables import Tables


class MemorySchedules:
    """Cron and one-shot schedules, over the store's :class:`Tables`."""

    def __init__(self, tables: Tables) -> None:
        self._t = tables

    async def create(self, schedule: NewSchedule) -> ScheduleRecord:
        check_schedule(schedule)
        with self._t.transaction() as now:
            if schedule.schedule_id in self._t.schedules:
                raise ScheduleExistsError(schedule.schedule_id)
            record = ScheduleRecord(
                schedule_id=schedule.schedule_id,
                workflow=schedule.workflow,
                input=schedule.input,
                cron=schedule.cron,
                at=schedule.at,
                timezone=schedule.timezone,
                next_fire_at=schedule.next_fire_at,
                paused=False,
                overlap=schedule.overlap,
                catchup_window=schedule.catchup_window,
                last_fire_at=None,
                last_run_id=None,
                created_at=now,
                updated_at=now,
            )
            self._t.schedules[schedule.schedule_id] = record
            self._t.notify()  # schedule loops re-read their next fire time
            return record

    async def get(self, schedule_id: str) -> ScheduleRecord | None:
        with self._t.transaction():
            return self._t.schedules.get(schedule_id)

    async def list(self, *, workflow: str | None = None) -> builtins.list[ScheduleRecord]:
        with self._t.transaction():
            found = [
                s for s in self._t.schedules.values() if workflow is None or s.workflow == workflow
            ]
        return sorted(found, key=lambda s: s.schedule_id)

    async def pause(self, schedule_id: str) -> ScheduleRecord:
        with self._t.transaction() as now:
            schedule = self._existing(schedule_id)
            if not schedule.paused:
                schedule = dataclasses.replace(schedule, paused=True, updated_at=now)
                self._t.schedules[schedule_id] = schedule
            return schedule

    async def resume(self, schedule_id: str, next_fire_at: float | None) -> ScheduleRecord:
        with self._t.transaction() as now:
            schedule = self._existing(schedule_id)
            if schedule.paused:
                schedule = dataclasses.replace(
                    schedule, paused=False, next_fire_at=next_fire_at, updated_at=now
                )
                self._t.schedules[schedule_id] = schedule
                self._t.notify()
            return schedule

    async def delete(self, schedule_id: str) -> None:
        with self._t.transaction():
            self._existing(schedule_id)
            del self._t.schedules[schedule_id]

    async def due(self, workflows: Collection[str], *, limit: int) -> DueSchedules:
        check_claim_limit(limit)
        names = frozenset(workflows)
        with self._t.transaction() as now:
            active = sorted(
                (
                    s
                    for s in self._t.schedules.values()
                    if not s.paused and s.next_fire_at is not None and s.workflow in names
                ),
                key=lambda s: (s.next_fire_at or 0.0, s.schedule_id),
            )
        ready = [s for s in active if s.next_fire_at is not None and s.next_fire_at <= now]
        earliest = active[0].next_fire_at if active else None
        return DueSchedules(now, ready[:limit], earliest)

    async def fire(self, schedule_id: str, **tick: Unpack[ScheduleTick]) -> bool:
        expected, run = tick["expected"], tick["run"]
        check_fire(expected, tick["tick"])
        with self._t.transaction() as now:
            schedule = self._t.schedules.get(schedule_id)
            if (
                schedule is None
                or schedule.paused
                or schedule.next_fire_at != expected
                or tick["tick"] > now
            ):
                return False
            updated = dataclasses.replace(
                schedule, next_fire_at=tick["next_fire_at"], updated_at=now
            )
            if run is not None:
                if run.run_id not in self._t.runs:  # a tick's run id is derived from the tick
                    self._t.insert_run(run, now)
                updated = dataclasses.replace(
                    updated, last_fire_at=tick["tick"], last_run_id=run.run_id
                )
            self._t.schedules[schedule_id] = updated
            self._t.notify()
            return True

    def _existing(self, schedule_id: str) -> ScheduleRecord:
        schedule = self._t.schedules.get(schedule_id)
        if schedule is None:
            raise ScheduleNotFoundError(schedule_id)
        return schedule
