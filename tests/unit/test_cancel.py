"""Cancellation with cleanup, on the pure core (no store, no worker)."""

from __future__ import annotations

import asyncio

import pytest

import keel
from keel.core.events import CommandKind, EventType
from keel.core.replay import shielded
from tests.unit.sim import boom, calls, cleanup, drive, replay, start, types


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()


seen: list[bool] = []


async def cleans_up() -> str:
    seen.append(keel.cancel_requested())
    try:
        await asyncio.gather(keel.wait_for_signal("go"), keel.sleep(60))
    except keel.WorkflowCancelled:
        seen.append(keel.cancel_requested())
        await cleanup("order")
        raise
    return "done"


def test_cancel_is_journaled_and_cleanup_steps_run_and_replay() -> None:
    seen.clear()
    ex = start(cleans_up)
    assert [c.id.kind for c in ex.pending()] == [CommandKind.SIGNAL, CommandKind.SLEEP]
    ex.cancel()
    # The pending wait and timer are discarded; the cleanup step is the only work left.
    assert [c.key for c in ex.pending()] == ["step:u.cleanup#0"]
    assert [e.type for e in ex.outbox] == [EventType.CANCEL_REQUESTED]
    ex.cancel()  # a second request changes nothing
    drive(ex)
    assert ex.outcome is not None and ex.outcome.status == "cancelled"
    assert calls == ["cleanup order"]
    assert seen == [False, True]
    assert types(ex) == ["run_started", "cancel_requested", "step_completed step:u.cleanup#0"]

    seen.clear()
    again = replay(cleans_up, list(ex.journal))
    assert again.outcome is not None and again.outcome.status == "cancelled"
    assert again.outbox == [] and calls == ["cleanup order"]  # nothing ran again
    assert seen == [False, True]


def test_replay_of_a_cancelled_run_halfway_through_cleanup_continues_it() -> None:
    async def two_cleanups() -> None:
        try:
            await keel.wait_for_signal("go")
        except keel.WorkflowCancelled:
            await cleanup("a")
            await cleanup("b")
            raise

    ex = start(two_cleanups)
    ex.cancel()
    drive(ex, steps=1)
    prefix = list(ex.journal)  # a crash here: cleanup a journaled, b not started
    again = replay(two_cleanups, prefix)
    assert [c.key for c in again.pending()] == ["step:u.cleanup#1"]
    drive(again)
    assert again.outcome is not None and again.outcome.status == "cancelled"
    assert calls == ["cleanup a", "cleanup b"]


def test_changed_cleanup_code_is_nondeterminism() -> None:
    async def other_cleanup() -> None:
        try:
            await keel.wait_for_signal("go")
        except keel.WorkflowCancelled:
            await cleanup("something else")
            raise

    seen.clear()
    ex = start(cleans_up)
    ex.cancel()
    drive(ex)
    with pytest.raises(keel.NondeterminismError, match="different arguments"):
        replay(other_cleanup, list(ex.journal))


def test_swallowed_cancel_fails_and_failing_cleanup_fails_the_run() -> None:
    async def swallows() -> str:
        try:
            await keel.wait_for_signal("go")
        except keel.WorkflowCancelled:
            await cleanup("x")
        return "carried on"

    async def cleanup_fails() -> None:
        try:
            await keel.wait_for_signal("go")
        finally:
            await boom()

    ex = start(swallows)
    ex.cancel()
    drive(ex)
    assert ex.outcome is not None and ex.outcome.status == "failed"
    assert isinstance(ex.outcome.error, keel.ControlFlowSwallowedError)
    ex = start(cleanup_fails)
    ex.cancel()
    drive(ex)
    assert ex.outcome is not None and ex.outcome.status == "failed"
    assert isinstance(ex.outcome.error, keel.StepFailedError)  # the cleanup's own failure


def test_cancel_waits_for_shielded_work_then_surfaces_at_the_next_command() -> None:
    async def shielded_then_more(finish: str) -> str:
        with shielded():
            await cleanup("shielded")
        if finish == "step":
            await cleanup("after")
        return "returned"

    ex = start(shielded_then_more, "step")
    ex.cancel()
    assert [c.key for c in ex.pending()] == ["step:u.cleanup#0"]  # not discarded
    drive(ex)
    assert ex.outcome is not None and ex.outcome.status == "cancelled"
    assert calls == ["cleanup shielded"]  # the next unshielded step raised instead
    again = replay(shielded_then_more, list(ex.journal), "step")
    assert again.outcome is not None and again.outcome.status == "cancelled"

    # It never reached an await that could take it: the run ends as the code does.
    ex = start(shielded_then_more, "return")
    ex.cancel()
    drive(ex)
    assert ex.outcome is not None and ex.outcome.status == "completed"


def test_code_that_no_longer_cleans_up_is_nondeterminism() -> None:
    async def no_cleanup() -> str:
        await asyncio.gather(keel.wait_for_signal("go"), keel.sleep(60))
        return "done"

    seen.clear()
    ex = start(cleans_up)
    ex.cancel()
    drive(ex)
    with pytest.raises(keel.NondeterminismError, match="to return") as info:
        replay(no_cleanup, list(ex.journal))
    assert info.value.position == 2  # the cleanup step the new code no longer runs
