"""Replay and command identity, on the pure core (no store, no worker)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

import keel
from keel.core import codec
from keel.core.events import (
    CommandKind,
    EventType,
    StepCompleted,
    StepDispatched,
    TimerFired,
    TimerStarted,
    decode,
    encode_data,
    recorded_hash,
)
from keel.core.journal import JournalEntry
from keel.core.replay import Execution
from keel.errors import NondeterminismError, WorkflowError

STARTED = JournalEntry(0, EventType.RUN_STARTED, None, b"{}")


class FixedLive:
    def __init__(self) -> None:
        self.n = 0

    def now(self) -> datetime:
        self.n += 1
        return datetime(2026, 1, 1, 0, 0, self.n, tzinfo=UTC)

    def uuid4(self) -> uuid.UUID:
        self.n += 1
        return uuid.UUID(int=self.n)

    def random(self) -> float:
        self.n += 1
        return self.n / 100


def run_live(
    fn: Callable[..., Coroutine[Any, Any, Any]],
    *args: Any,
    complete_order: Callable[[list[Any]], list[Any]] = lambda cmds: cmds,
) -> tuple[Execution, list[JournalEntry]]:
    """Execute ``fn`` live, completing each step by calling its function inline."""
    ex = Execution("run-1", fn, args, {}, [STARTED], FixedLive())
    ex.start()
    while ex.outcome is None:
        pending = ex.pending()
        assert pending, "workflow blocked with nothing pending"
        cmd = complete_order(pending)[0]
        if cmd.id.kind is CommandKind.STEP:
            a, kw = codec.decode_args(cmd.target.fn, cmd.args, what="t")
            value = codec.encode(cmd.target.fn(*a, **kw))
            ex.record(
                cmd,
                StepCompleted(result=msgspec.Raw(value), args_hash=cmd.args_hash, attempt=1),
            )
        elif cmd.id.kind is CommandKind.SLEEP:
            ex.record(cmd, TimerStarted(fire_at=1.0, duration=1.0))
            ex.record(cmd, TimerFired())
        else:
            raise AssertionError(cmd)
    return ex, list(ex.journal)


def replay(
    fn: Callable[..., Coroutine[Any, Any, Any]], journal: list[JournalEntry], *args: Any
) -> Execution:
    ex = Execution("run-1", fn, args, {}, journal, FixedLive())
    ex.start()
    return ex


@keel.step
def a(x: int) -> int:
    return x + 1


@keel.step
def b(x: int) -> int:
    return x * 10


@keel.step
def c(x: int) -> int:
    return x - 1


async def a_then_b(x: int) -> int:
    return await b(await a(x))


async def b_then_a(x: int) -> int:
    return await a(await b(x))


async def a_then_c(x: int) -> int:
    return await c(await a(x))


async def sleep_instead(x: int) -> int:
    await keel.sleep(1)
    return await b(await a(x))


def test_replay_returns_journaled_results_without_running_steps() -> None:
    ex, journal = run_live(a_then_b, 1)
    assert ex.outcome is not None and ex.outcome.result == b"20"
    again = replay(a_then_b, journal, 1)
    assert again.outcome is not None and again.outcome.result == b"20"
    assert again.outbox == []


def test_reordered_steps_are_detected() -> None:
    _, journal = run_live(a_then_b, 1)
    with pytest.raises(NondeterminismError) as info:
        replay(b_then_a, journal, 1)
    err = info.value
    assert err.position == 1
    assert "step 'a'" in err.recorded and "step 'b'" in err.requested


def test_renamed_step_is_detected() -> None:
    _, journal = run_live(a_then_b, 1)
    with pytest.raises(NondeterminismError) as info:
        replay(a_then_c, journal, 1)
    assert info.value.position == 2
    assert "step 'b'" in info.value.recorded and "step 'c'" in info.value.requested


def test_changed_arguments_are_detected() -> None:
    _, journal = run_live(a_then_b, 1)
    with pytest.raises(NondeterminismError, match="different arguments"):
        replay(a_then_b, journal, 2)


def test_inserted_command_is_detected() -> None:
    _, journal = run_live(a_then_b, 1)
    with pytest.raises(NondeterminismError) as info:
        replay(sleep_instead, journal, 1)
    assert "sleep 'sleep'" in info.value.requested


def test_code_returning_early_is_detected() -> None:
    async def only_a(x: int) -> int:
        return await a(x)

    _, journal = run_live(a_then_b, 1)
    with pytest.raises(NondeterminismError, match="to return"):
        replay(only_a, journal, 1)


async def gather_chains(x: int) -> list[int]:
    async def left() -> int:
        return await c(await a(x))

    async def right() -> int:
        return await c(await b(x))

    return list(await asyncio.gather(left(), right()))


@pytest.mark.parametrize("order", ["first", "last"])
def test_parallel_completion_order_replays_identically(order: str) -> None:
    pick: Callable[[list[Any]], list[Any]] = (
        (lambda cmds: cmds) if order == "first" else (lambda cmds: list(reversed(cmds)))
    )
    ex, journal = run_live(gather_chains, 3, complete_order=pick)
    assert ex.outcome is not None and ex.outcome.result == b"[3,29]"
    again = replay(gather_chains, journal, 3)
    assert again.outcome is not None and again.outcome.result == b"[3,29]"


def test_command_ordinals_count_per_kind_and_name() -> None:
    async def repeated() -> None:
        await a(1)
        await a(2)
        await b(1)

    _, journal = run_live(repeated)
    assert [e.command for e in journal[1:4]] == ["step:a#0", "step:a#1", "step:b#0"]


def test_immediate_values_are_journaled_and_replayed() -> None:
    async def values() -> list[str]:
        return [keel.now().isoformat(), str(keel.uuid4()), str(keel.random())]

    ex, journal = run_live(values)
    assert [e.command for e in journal[1:]] == ["now:now#0", "uuid4:uuid4#0", "random:random#0"]
    again = replay(values, journal)
    assert again.outcome is not None and again.outcome.result == ex.outcome.result  # type: ignore[union-attr]


def test_evicting_after_a_replay_error_does_not_raise_it_again() -> None:
    async def values() -> str:
        return str(keel.now())

    async def other_value() -> str:
        return str(keel.uuid4())  # asks for another immediate value than recorded

    _, journal = run_live(values)
    ex = Execution("run-1", other_value, (), {}, journal, FixedLive())
    with pytest.raises(NondeterminismError, match="uuid4"):
        ex.start()
    assert ex.evict() is True  # the code is unwound quietly; the error was reported once


def test_asyncio_sleep_in_workflow_is_a_clear_error() -> None:
    async def bad() -> None:
        await asyncio.sleep(1)

    ex = Execution("run-1", bad, (), {}, [STARTED], FixedLive())
    ex.start()
    assert ex.outcome is not None and ex.outcome.status == "failed"
    assert isinstance(ex.outcome.error, WorkflowError)


def test_eviction_unwinds_and_detects_swallowing() -> None:
    async def polite() -> None:
        await keel.sleep(10)

    async def rude() -> str:
        with contextlib.suppress(BaseException):  # the mistake under test
            await keel.sleep(10)
        return "carried on"

    ex = Execution("r", polite, (), {}, [STARTED], FixedLive())
    ex.start()
    assert ex.evict() is True
    ex = Execution("r", rude, (), {}, [STARTED], FixedLive())
    ex.start()
    assert ex.evict() is False


def test_cancel_ends_cancelled_and_swallowing_cancel_fails() -> None:
    async def waits() -> None:
        await keel.sleep(10)

    async def swallows() -> str:
        try:
            await keel.sleep(10)
        except keel.WorkflowCancelled:
            return "ignored"
        return "?"

    ex = Execution("r", waits, (), {}, [STARTED], FixedLive())
    ex.start()
    ex.cancel()
    assert ex.outcome is not None and ex.outcome.status == "cancelled"
    ex = Execution("r", swallows, (), {}, [STARTED], FixedLive())
    ex.start()
    ex.cancel()
    assert ex.outcome is not None and ex.outcome.status == "failed"
    assert isinstance(ex.outcome.error, keel.ControlFlowSwallowedError)


def _with_dispatch(journal: list[JournalEntry], command: str) -> list[JournalEntry]:
    """``journal`` as if ``command`` had been dispatched to a queue before completing."""
    out: list[JournalEntry] = []
    for entry in journal:
        if entry.command == command and entry.type is EventType.STEP_COMPLETED:
            recorded = recorded_hash(decode(entry.type, entry.data))
            data = encode_data(StepDispatched(queue="gpu", priority=0, args_hash=recorded))
            out.append(JournalEntry(len(out), EventType.STEP_DISPATCHED, command, data))
        out.append(JournalEntry(len(out), entry.type, entry.command, entry.data))
    return out


def test_dispatched_steps_replay() -> None:
    _, journal = run_live(a_then_b, 1)
    dispatched = _with_dispatch(journal, "step:b#0")
    again = replay(a_then_b, dispatched, 1)
    assert again.outcome is not None and again.outcome.result == b"20"
    # Waiting for the task: the command is pending and known to be dispatched.
    waiting = replay(a_then_b, dispatched[:3], 1)
    [cmd] = waiting.pending()
    assert cmd.key == "step:b#0" and cmd.dispatched and cmd.task_id is None


def test_dispatched_step_with_changed_arguments_is_detected() -> None:
    _, journal = run_live(a_then_b, 1)
    dispatched = _with_dispatch(journal, "step:a#0")
    with pytest.raises(NondeterminismError, match="different arguments") as info:
        replay(a_then_b, dispatched[:2], 2)
    assert info.value.position == 1
