"""Signal waits as a run's driver plans them: journal a buffered signal, note
the wait (and its deadline), or journal its time-out."""

from __future__ import annotations

import msgspec

from keel.core.commands import Command
from keel.core.events import SignalAwaited, SignalReceived, SignalTimedOut
from keel.core.replay import Execution
from keel.store.ports import Store


async def receive(store: Store, ex: Execution, cmd: Command) -> int | None:
    """Journal the oldest buffered signal ``cmd`` waits for, if there is one, and
    return its id: the caller consumes it in the transaction that writes the event."""
    signal = await store.mailbox.next(ex.run_id, cmd.id.name)
    if signal is None:
        return None
    ex.record(
        cmd,
        SignalReceived(name=cmd.id.name, payload=msgspec.Raw(signal.payload), signal_id=signal.id),
    )
    return signal.id


def wait(ex: Execution, cmd: Command, now: float) -> bool:
    """No signal yet: journal the wait once (with its deadline); return True if
    the deadline has passed and the time-out is journaled."""
    if not cmd.awaited:
        deadline = None if cmd.timeout is None else now + cmd.timeout
        ex.record(cmd, SignalAwaited(name=cmd.id.name, timeout=cmd.timeout, deadline=deadline))
    if cmd.deadline is not None and cmd.deadline <= now:
        ex.record(cmd, SignalTimedOut(name=cmd.id.name, timeout=cmd.timeout))
        return True
    return False
