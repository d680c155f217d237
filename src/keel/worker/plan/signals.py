"""Signal waits (``keel.wait_for_signal``): journal a buffered signal (consuming
it in the same write), note the wait and its deadline, or journal its time-out."""

from __future__ import annotations

import msgspec

from keel.core.commands import Command
from keel.core.events import SignalAwaited, SignalReceived, SignalTimedOut
from keel.store.base import SignalRecord
from keel.worker.actions import ConsumeSignal, Planned, RecordEvent, WakeAt, WakeOnSignal


def plan_signal(cmd: Command, now: float, signal: SignalRecord | None) -> list[Planned]:
    """``signal``: the oldest unconsumed signal of the name ``cmd`` waits for, if any."""
    name = cmd.id.name
    if signal is not None:
        received = SignalReceived(
            name=name, payload=msgspec.Raw(signal.payload), signal_id=signal.id
        )
        return [RecordEvent(cmd, received), ConsumeSignal(signal.id)]
    planned: list[Planned] = []
    deadline = cmd.deadline
    if not cmd.awaited:  # journaled once, with its deadline
        deadline = None if cmd.timeout is None else now + cmd.timeout
        awaited = SignalAwaited(name=name, timeout=cmd.timeout, deadline=deadline)
        planned.append(RecordEvent(cmd, awaited))
    if deadline is not None and deadline <= now:
        planned.append(RecordEvent(cmd, SignalTimedOut(name=name, timeout=cmd.timeout)))
        return planned
    planned.append(WakeOnSignal(name))
    if deadline is not None:
        planned.append(WakeAt(deadline))
    return planned
