"""Durable timers (``keel.sleep``): start one, fire it when due, or wait for it."""

from __future__ import annotations

from keel.core.commands import Command
from keel.core.events import TimerFired, TimerStarted
from keel.worker.actions import Planned, RecordEvent, WaitUntil, WakeAt


def plan_timer(cmd: Command, now: float, inline_wait: float) -> list[Planned]:
    """Journal ``timer_started`` once (firing ``duration`` seconds from ``now``),
    ``timer_fired`` once due; until then wait here if it fires within
    ``inline_wait`` seconds, else at a durable wake-up."""
    planned: list[Planned] = []
    fire_at = cmd.fire_at
    if fire_at is None:
        fire_at = now + float(cmd.duration or 0.0)
        planned.append(RecordEvent(cmd, TimerStarted(duration=cmd.duration, fire_at=fire_at)))
    if fire_at <= now:
        planned.append(RecordEvent(cmd, TimerFired()))
    elif fire_at - now <= inline_wait:
        planned.append(WaitUntil(cmd, "timer", fire_at))
    else:
        planned.append(WakeAt(fire_at))
    return planned


def plan_fired(cmd: Command) -> list[RecordEvent]:
    """A timer waited for in this worker has fired."""
    return [RecordEvent(cmd, TimerFired())]
