"""Schedules and queue limits."""

from __future__ import annotations

import builtins
import time
from datetime import datetime
from typing import Any

import keel.schedules as schedules
from keel.client.base import ClientBase
from keel.client.filters import check_workflow
from keel.client.ids import new_run_id
from keel.core import names
from keel.errors import (
    ConfigurationError,
    ScheduleNotFoundError,
)
from keel.schedules import ScheduleInfo
from keel.store.base import QueueInfo
from keel.workflow.definitions import WorkflowDef


class SchedulesMixin(ClientBase):
    """:class:`~keel.client.Client` methods for schedules and queues."""

    # --- queues ---------------------------------------------------------------------------------
    async def set_queue_limit(self, queue: str, concurrency: int | None) -> None:
        """Run at most ``concurrency`` dispatched steps of ``queue`` at once over all
        workers on this database (``None`` removes the limit; 0 pauses the queue:
        no new step of it starts until the limit is raised or removed).

        Stored in the database, so it holds for every worker, including ones
        started later; each worker's own ``--queue NAME=LIMIT`` applies as well.
        Steps already running are not stopped when the limit is lowered.
        """
        names.text(queue, "queue name")
        await self.open()
        await self.store.tasks.set_limit(queue, concurrency)

    async def queues(self) -> builtins.list[QueueInfo]:
        """Queues with a limit or with dispatched steps waiting or running."""
        await self.open()
        return await self.store.tasks.list_queues()

    # --- schedules ------------------------------------------------------------------------------
    async def schedule(
        self,
        workflow: WorkflowDef[Any, Any] | str,
        *args: Any,
        cron: str | None = None,
        at: datetime | str | None = None,
        timezone: str | None = None,
        schedule_id: str | None = None,
        overlap: str = "allow",
        catchup_window: float | None = None,
        **kwargs: Any,
    ) -> ScheduleInfo:
        """Start runs of ``workflow`` with these arguments on a schedule.

        ``cron="0 9 * * MON-FRI"`` (five fields, or six with seconds first, or
        ``@daily``...) read in ``timezone`` (an IANA name, default UTC) starts
        a run at every tick; ``at=`` (an aware datetime or ISO-8601 string; a
        naive one is read in ``timezone``) starts one run once (at once if
        that time is past). Exactly one run per tick, whichever workers fire it;
        its run id is ``<schedule_id>@<tick in UTC>``. After downtime only the
        latest missed tick runs; with ``catchup_window`` (seconds) not even that
        if it is older. ``overlap="skip"`` skips a tick while the schedule's
        last run is unfinished.

        Everything is checked here: :class:`InvalidScheduleError` (cron, time
        zone, time, options), :class:`WorkflowNotFoundError`,
        :class:`SerializationError`, and :class:`ScheduleExistsError` when
        ``schedule_id`` (default: a new UUIDv7) is taken.
        """
        check_workflow(workflow, "schedule")
        names.optional_text(schedule_id, "schedule_id")
        wf = self.registry.get(workflow) if isinstance(workflow, str) else workflow
        if not isinstance(wf, WorkflowDef):
            raise ConfigurationError(f"schedule() needs a @keel.workflow or its name, not {wf!r}")
        # Checked before the store is opened: bad input creates nothing, not even a file.
        new = schedules.new_schedule(
            wf,
            args,
            kwargs,
            schedule_id=new_run_id() if schedule_id is None else schedule_id,
            cron_expr=cron,
            at=at,
            timezone=timezone,
            overlap=overlap,
            catchup_window=catchup_window,
            now=time.time(),
        )
        await self.open()
        new = schedules.on_store_clock(new, await self.store.now())
        return ScheduleInfo.from_record(await self.store.schedules.create(new))

    async def get_schedule(self, schedule_id: str) -> ScheduleInfo:
        """One schedule; raises :class:`ScheduleNotFoundError`."""
        names.text(schedule_id, "schedule_id")
        await self.open()
        rec = await self.store.schedules.get(schedule_id)
        if rec is None:
            raise ScheduleNotFoundError(schedule_id)
        return ScheduleInfo.from_record(rec)

    async def list_schedules(self, *, workflow: str | None = None) -> builtins.list[ScheduleInfo]:
        """Every schedule (of ``workflow``), by id."""
        names.optional_text(workflow, "workflow")
        await self.open()
        return [
            ScheduleInfo.from_record(r) for r in await self.store.schedules.list(workflow=workflow)
        ]

    async def pause_schedule(self, schedule_id: str) -> ScheduleInfo:
        """Stop starting runs until resumed (runs already started go on)."""
        names.text(schedule_id, "schedule_id")
        await self.open()
        return ScheduleInfo.from_record(await self.store.schedules.pause(schedule_id))

    async def resume_schedule(self, schedule_id: str) -> ScheduleInfo:
        """Start runs again: a cron schedule from its next tick (ticks missed while
        paused are skipped), a one-shot at its time (at once if that has passed)."""
        names.text(schedule_id, "schedule_id")
        await self.open()
        rec = await self.store.schedules.get(schedule_id)
        if rec is None:
            raise ScheduleNotFoundError(schedule_id)
        next_fire_at = schedules.resume_time(rec, await self.store.now())
        return ScheduleInfo.from_record(
            await self.store.schedules.resume(schedule_id, next_fire_at)
        )

    async def delete_schedule(self, schedule_id: str) -> None:
        """Delete a schedule; the runs it started are kept."""
        names.text(schedule_id, "schedule_id")
        await self.open()
        await self.store.schedules.delete(schedule_id)
