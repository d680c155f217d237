"""Drive an :class:`Execution` live without a worker: steps run inline, and a
step that raises fails for good. Shared by the core tests of cancellation and
sagas, with the steps they use."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import msgspec

import keel
from keel.core import codec
from keel.core.events import CommandKind, StepCompleted, StepFailed, TimerFired, TimerStarted
from keel.core.journal import JournalEntry
from keel.core.replay import Execution
from keel.errors import error_info
from tests.unit.test_replay import STARTED, FixedLive

calls: list[str] = []


@keel.step(name="u.release")
def release(item: str, result: str) -> None:
    calls.append(f"release {result}")


@keel.step(name="u.reserve", compensate=release)
def reserve(item: str) -> str:
    calls.append(f"reserve {item}")
    return f"hold-{item}"


@keel.step(name="u.refund")
def refund(amount: int) -> None:
    calls.append(f"refund {amount}")
    if amount == 13:
        raise RuntimeError("refund rejected")


@keel.step(name="u.charge", compensate=refund)
def charge(amount: int, card: str = "visa") -> str:
    calls.append(f"charge {amount}")
    return f"receipt-{amount}"


@keel.step(name="u.boom")
def boom() -> None:
    calls.append("boom")
    raise ValueError("out of stock")


@keel.step(name="u.cleanup")
def cleanup(what: str) -> str:
    calls.append(f"cleanup {what}")
    return f"cleaned {what}"


Pick = Callable[[list[Any]], Any]


def complete(ex: Execution, cmd: Any) -> None:
    """Carry out one pending command inline: a step that raises fails for good."""
    if cmd.id.kind is CommandKind.STEP:
        args, kwargs = codec.decode_args(cmd.target.fn, cmd.args, what="t")
        try:
            value = cmd.target.fn(*args, **kwargs)
        except Exception as exc:
            ex.record(cmd, StepFailed(attempts=1, error=error_info(exc), args_hash=cmd.args_hash))
            return
        result = msgspec.Raw(codec.encode(value))
        ex.record(cmd, StepCompleted(result=result, args_hash=cmd.args_hash, attempt=1))
    elif cmd.id.kind is CommandKind.SLEEP:
        ex.record(cmd, TimerStarted(fire_at=1.0, duration=1.0))
        ex.record(cmd, TimerFired())
    else:
        raise AssertionError(cmd)


def drive(ex: Execution, pick: Pick = lambda cmds: cmds[0], steps: int | None = None) -> None:
    """Complete pending commands until the run ends, only signal waits remain,
    or ``steps`` commands were completed."""
    done = 0
    while ex.outcome is None and (steps is None or done < steps):
        ready = [c for c in ex.pending() if c.id.kind is not CommandKind.SIGNAL]
        if not ready:
            return
        complete(ex, pick(ready))
        done += 1


def start(fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Execution:
    ex = Execution("run-1", fn, args, {}, [STARTED], FixedLive())
    ex.start()
    return ex


def replay(
    fn: Callable[..., Coroutine[Any, Any, Any]], journal: list[JournalEntry], *args: Any
) -> Execution:
    ex = Execution("run-1", fn, args, {}, journal, FixedLive())
    ex.start()
    return ex


def types(ex: Execution) -> list[str]:
    return [f"{e.type.value} {e.command or ''}".strip() for e in ex.journal]
