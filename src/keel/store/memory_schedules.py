"""The in-memory store's schedules: a mixin of :class:`MemoryStore`.

Same rules as the rest of the store: each method does its work under the
store's lock without awaiting, so a fire is one atomic compare-and-set.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from keel.errors import ScheduleExistsError, ScheduleNotFoundError
from keel.store._checks import check_claim_limit, check_fire, check_schedule
from keel.store.base import (
    DueSchedules,
    Lease,
    NewRun,
    NewSchedule,
    RunRecord,
    ScheduleRecord,
)


class MemorySchedules:
    """The schedule methods of :class:`~keel.store.memory.MemoryStore`, which sets the state."""

    _lock: threading.RLock
    _clock: Callable[[], float]
    _runs: dict[str, RunRecord]
    _schedules: dict[str, ScheduleRecord]

    if TYPE_CHECKING:  # defined by MemoryStore

        def _check_open(self) -> None: ...
        def _notify(self) -> None: ...
        def _insert_run(
            self, run: NewRun, now: float, lease_owner: str | None = None, lease_ttl: float = 30.0
        ) -> tuple[RunRecord, Lease | None]: ...

    async def create_schedule(self, schedule: NewSchedule) -> ScheduleRecord:
        check_schedule(schedule)
        with self._lock:
            self._check_open()
            if schedule.schedule_id in self._schedules:
                raise ScheduleExistsError(schedule.schedule_id)
            now = self._clock()
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
            self._schedules[schedule.schedule_id] = record
            self._notify()  # schedule loops re-read their next fire time
            return record

    async def get_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        with self._lock:
            self._check_open()
            return self._schedules.get(schedule_id)

    async def list_schedules(self, *, workflow: str | None = None) -> list[ScheduleRecord]:
        with self._lock:
            self._check_open()
            found = [
                s for s in self._schedules.values() if workflow is None or s.workflow == workflow
            ]
        return sorted(found, key=lambda s: s.schedule_id)

    def _existing(self, schedule_id: str) -> ScheduleRecord:
        schedule = self._schedules.get(schedule_id)
        if schedule is None:
            raise ScheduleNotFoundError(schedule_id)
        return schedule

    async def pause_schedule(self, schedule_id: str) -> ScheduleRecord:
        with self._lock:
            self._check_open()
            schedule = self._existing(schedule_id)
            if not schedule.paused:
                schedule = dataclasses.replace(schedule, paused=True, updated_at=self._clock())
                self._schedules[schedule_id] = schedule
            return schedule

    async def resume_schedule(self, schedule_id: str, next_fire_at: float | None) -> ScheduleRecord:
        with self._lock:
            self._check_open()
            schedule = self._existing(schedule_id)
            if schedule.paused:
                schedule = dataclasses.replace(
                    schedule, paused=False, next_fire_at=next_fire_at, updated_at=self._clock()
                )
                self._schedules[schedule_id] = schedule
                self._notify()
            return schedule

    async def delete_schedule(self, schedule_id: str) -> None:
        with self._lock:
            self._check_open()
            self._existing(schedule_id)
            del self._schedules[schedule_id]

    async def due_schedules(self, workflows: Collection[str], *, limit: int) -> DueSchedules:
        check_claim_limit(limit)
        names = frozenset(workflows)
        with self._lock:
            self._check_open()
            now = self._clock()
            active = sorted(
                (
                    s
                    for s in self._schedules.values()
                    if not s.paused and s.next_fire_at is not None and s.workflow in names
                ),
                key=lambda s: (s.next_fire_at or 0.0, s.schedule_id),
            )
        due = [s for s in active if s.next_fire_at is not None and s.next_fire_at <= now]
        earliest = active[0].next_fire_at if active else None
        return DueSchedules(now, due[:limit], earliest)

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
        with self._lock:
            self._check_open()
            now = self._clock()
            schedule = self._schedules.get(schedule_id)
            if (
                schedule is None
                or schedule.paused
                or schedule.next_fire_at != expected
                or tick > now
            ):
                return False
            updated = dataclasses.replace(schedule, next_fire_at=next_fire_at, updated_at=now)
            if run is not None:
                if run.run_id not in self._runs:  # a tick's run id is derived from the tick
                    self._insert_run(run, now)
                updated = dataclasses.replace(updated, last_fire_at=tick, last_run_id=run.run_id)
            self._schedules[schedule_id] = updated
            self._notify()
            return True
