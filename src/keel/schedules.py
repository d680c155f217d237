"""Schedules as the client and the worker see them.

A schedule starts runs of a workflow on a cron expression in a time zone, or
once at a given time. The client checks everything when the schedule is made
(:func:`new_schedule`); any worker that has the workflow registered fires it
(:func:`plan_tick`, then :meth:`keel.store.ports.Schedules.fire`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from keel.core import codec, cron
from keel.core.events import EventType, encode_data, run_started
from keel.core.inputs import check_input
from keel.errors import InvalidScheduleError, SerializationError
from keel.store._checks import OVERLAP_POLICIES
from keel.store.base import NewEvent, NewRun, NewSchedule, ScheduleRecord
from keel.workflow.definitions import WorkflowDef

MAX_SCHEDULE_ID = 150  # a tick's run id adds "@" and a 20-27 character UTC time


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """A schedule as the client reports it.

    ``state`` is ``"active"``, ``"paused"``, or ``"done"`` (a one-shot that fired).
    ``input`` is the workflow's arguments by parameter name, as plain JSON values.
    """

    schedule_id: str
    workflow: str
    state: Literal["active", "paused", "done"]
    cron: str | None
    at: datetime | None
    timezone: str
    next_fire_at: datetime | None
    overlap: str
    catchup_window: float | None
    last_fire_at: datetime | None
    last_run_id: str | None
    created_at: datetime
    updated_at: datetime
    input: dict[str, Any]

    @classmethod
    def from_record(cls, rec: ScheduleRecord) -> ScheduleInfo:
        state: Literal["active", "paused", "done"] = "active"
        if rec.paused:
            state = "paused"
        elif rec.next_fire_at is None:
            state = "done"
        return cls(
            schedule_id=rec.schedule_id,
            workflow=rec.workflow,
            state=state,
            cron=rec.cron,
            at=_dt(rec.at),
            timezone=rec.timezone,
            next_fire_at=_dt(rec.next_fire_at),
            overlap=rec.overlap,
            catchup_window=rec.catchup_window,
            last_fire_at=_dt(rec.last_fire_at),
            last_run_id=rec.last_run_id,
            created_at=datetime.fromtimestamp(rec.created_at, UTC),
            updated_at=datetime.fromtimestamp(rec.updated_at, UTC),
            input=codec.decode(rec.input),
        )


def new_schedule(
    wf: WorkflowDef[Any, Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    schedule_id: str,
    cron_expr: str | None,
    at: object,
    timezone: str | None,
    overlap: str,
    catchup_window: float | None,
    now: float,
) -> NewSchedule:
    """Check a schedule the way :meth:`keel.Client.schedule` is called, before anything
    is written; raise :class:`InvalidScheduleError` (or ``SerializationError`` for
    arguments that cannot be encoded)."""
    if (cron_expr is None) == (at is None):
        raise InvalidScheduleError(
            "cron", "give exactly one of cron= (recurring) and at= (one-shot)"
        )
    if (
        not isinstance(schedule_id, str)
        or not schedule_id.strip()
        or len(schedule_id) > MAX_SCHEDULE_ID
    ):
        raise InvalidScheduleError(
            "schedule_id",
            f"schedule_id must be a non-empty string (<= {MAX_SCHEDULE_ID} chars): {schedule_id!r}",
        )
    if overlap not in OVERLAP_POLICIES:
        raise InvalidScheduleError(
            "overlap", f"overlap must be one of {', '.join(OVERLAP_POLICIES)}, not {overlap!r}"
        )
    if catchup_window is not None and (
        isinstance(catchup_window, bool)
        or not isinstance(catchup_window, int | float)
        or not math.isfinite(catchup_window)
        or catchup_window <= 0
    ):
        raise InvalidScheduleError(
            "catchup_window",
            f"catchup_window must be a positive number of seconds, not {catchup_window!r}",
        )
    zone_name = "UTC" if timezone is None else timezone
    cron.zone(zone_name)  # an unknown zone is an error even for an aware one-shot time
    when: float | None = None
    if cron_expr is not None:
        cron_expr = cron.check_cron(cron_expr, zone_name)
        first = cron.next_tick(cron_expr, zone_name, now)
        if first is None:
            raise InvalidScheduleError(
                "cron", f"cron expression {cron_expr!r} never fires after now"
            )
    else:
        when = first = cron.parse_at(at, timezone)  # in the past: fires at once
    try:
        data = codec.encode_args(wf.fn, args, kwargs, what=f"workflow {wf.name!r}")
    except TypeError as exc:
        if isinstance(exc, SerializationError):
            raise
        raise TypeError(f"bad arguments for workflow {wf.name!r}: {exc}") from None
    check_input(wf.codec, data, wf.name)  # every run it starts would fail in the worker
    return NewSchedule(
        schedule_id=schedule_id,
        workflow=wf.name,
        input=data,
        cron=cron_expr,
        at=when,
        timezone=zone_name,
        next_fire_at=first,
        overlap=overlap,
        catchup_window=None if catchup_window is None else float(catchup_window),
    )


def on_store_clock(new: NewSchedule, now: float) -> NewSchedule:
    """``new`` with a cron schedule's first tick taken after ``now`` on the store clock
    (:func:`new_schedule` may have used another clock to check it)."""
    if new.cron is None:
        return new
    first = cron.next_tick(new.cron, new.timezone, now)
    if first is None:
        raise InvalidScheduleError("cron", f"cron expression {new.cron!r} never fires after now")
    return dataclasses.replace(new, next_fire_at=first)


def resume_time(rec: ScheduleRecord, now: float) -> float | None:
    """Where a resumed schedule starts again (see :func:`keel.core.cron.resume_tick`)."""
    return cron.resume_tick(rec.cron, rec.timezone, rec.next_fire_at, now)


def plan_tick(rec: ScheduleRecord, now: float) -> tuple[float, float | None]:
    """``(tick, next_fire_at)`` for a due schedule (see :func:`keel.core.cron.plan_tick`)."""
    if rec.next_fire_at is None or rec.next_fire_at > now:
        raise ValueError(f"schedule {rec.schedule_id!r} is not due at {now}")
    return cron.plan_tick(rec.cron, rec.timezone, rec.next_fire_at, now)


def tick_run(
    wf: WorkflowDef[Any, Any], rec: ScheduleRecord, tick: float, *, traceparent: str | None = None
) -> NewRun:
    """The run of one tick: its id derived from the schedule and the tick, and the
    schedule named in its started event (with the ``traceparent`` of the span
    that starts it, when tracing is on)."""
    run_id = cron.tick_run_id(rec.schedule_id, tick)
    first = run_started(
        wf.name,
        wf.version,
        rec.input,
        schedule=rec.schedule_id,
        scheduled_at=tick,
        traceparent=traceparent,
    )
    started = NewEvent(EventType.RUN_STARTED.value, None, encode_data(first))
    return NewRun(run_id, wf.name, wf.version, rec.input, started)


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)
