"""Saga compensations end to end, on every backend (every turn replayed from
the store unless a test says otherwise)."""

from __future__ import annotations

from typing import Any

import pytest

import keel
from keel import RetryPolicy
from tests.integration._support import (
    calls,
    crash,
    gate,
    journal,
    note,
    order,
    reset,
    started,
    wait_event,
    wait_state,
    wait_until,
)


@pytest.fixture(autouse=True)
def _reset() -> None:
    reset()


FAST = RetryPolicy(max_attempts=3, initial_interval=0.01, max_interval=0.05, jitter=0.0)


@keel.step(name="ci.release", retry=FAST)
def release(item: str) -> None:
    note(f"release {item}")


@keel.step(name="ci.reserve", compensate=release)
def reserve(item: str) -> str:
    note(f"reserve {item}")
    return item


@keel.step(name="ci.refund", retry=FAST)
def refund(result: str) -> None:
    note(f"refund {result}")
    if result == "receipt-13":
        raise RuntimeError("refund rejected")


@keel.step(name="ci.charge", compensate=refund)
def charge(amount: int) -> str:
    note(f"charge {amount}")
    return f"receipt-{amount}"


@keel.step(name="ci.unship", retry=FAST)
def unship(item: str) -> None:
    note(f"unship {item}")
    if item == "gated":
        started.set()
        if not gate.wait(20):
            raise TimeoutError("gate never opened")


@keel.step(name="ci.ship", compensate=unship)
def ship(item: str) -> str:
    note(f"ship {item}")
    return item


@keel.step(name="ci.boom", retry=FAST)
def boom() -> None:
    note("boom")
    raise ValueError("out of stock")


@keel.workflow(name="ci.trip")
async def trip(amount: int, item: str, parallel: bool) -> str:
    async with keel.saga(parallel=parallel):
        await reserve("room")
        await charge(amount)
        await ship(item)
        await boom()
    return "unreachable"


@keel.workflow(name="ci.trip_until_cancelled")
async def trip_until_cancelled() -> str:
    async with keel.saga():
        await reserve("room")
        await charge(5)
        await keel.wait_for_signal("confirm")
    return "confirmed"


async def test_saga_compensates_newest_first_and_each_once(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(trip, 5, "box", False)
        with pytest.raises(keel.RunFailedError) as info:
            await run.result(timeout=10)
        history = await client.history(run.run_id)
    assert info.value.error_type == "keel.errors.StepFailedError"
    assert order == [
        "reserve room",
        "charge 5",
        "ship box",
        "boom",
        "boom",
        "boom",  # the failing step's own retries
        "unship box",
        "refund receipt-5",
        "release room",
    ]
    completed = [e.command for e in history if e.type == "step_completed"]
    assert completed[-3:] == ["step:ci.unship#0", "step:ci.refund#0", "step:ci.release#0"]


async def test_failed_compensation_is_journaled_and_the_others_still_run(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(trip, 13, "box", False)
        with pytest.raises(keel.RunFailedError) as info:
            await run.result(timeout=10)
        history = await client.history(run.run_id)
    assert info.value.error_type == "keel.errors.StepFailedError"
    assert "'ci.boom'" in info.value.message  # the original error, re-raised
    assert "keel saga: step 'ci.refund' failed after 3 attempt(s)" in info.value.traceback
    assert calls["refund receipt-13"] == 3  # the compensation's own retry policy
    assert order[-2:] == ["refund receipt-13", "release room"]  # the next one still ran
    refund_events = [e.type for e in history if e.command == "step:ci.refund#0"]
    assert refund_events == ["step_attempt_failed", "step_attempt_failed", "step_failed"]


async def test_parallel_saga_runs_compensations_together(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(trip, 5, "gated", True)
        await wait_event(started, "the gated compensation to start")
        # unship is blocked, yet the other two compensations complete meanwhile.
        await wait_until(
            lambda: calls["refund receipt-5"] and calls["release room"],
            "the other compensations to run beside the blocked one",
        )
        gate.set()
        with pytest.raises(keel.RunFailedError):
            await run.result(timeout=10)
    assert calls["unship gated"] == 1 and calls["refund receipt-5"] == 1


@pytest.mark.parametrize("cache", [False, True], ids=["replayed", "resident"])
async def test_cancelled_saga_compensates_then_ends_cancelled(env: Any, cache: bool) -> None:
    async with env(cache=cache) as (client, _):
        run = await client.start(trip_until_cancelled)
        await wait_state(client, run.run_id, keel.RunState.SUSPENDED)
        await client.cancel(run.run_id)
        with pytest.raises(keel.RunCancelledError):
            await run.result(timeout=10)
    assert order == ["reserve room", "charge 5", "refund receipt-5", "release room"]


async def test_crash_after_the_first_of_three_compensations(env: Any) -> None:
    """The same outcome as without the crash; no completed step or compensation
    runs twice (the one in flight at the crash runs again)."""
    async with env() as (client, _):
        calm = await client.start(trip, 5, "box", False)
        with pytest.raises(keel.RunFailedError):
            await calm.result(timeout=10)
        expected = journal(await client.history(calm.run_id))
    calls.clear()
    order.clear()

    # Compensations run newest first: unship (1st), refund (2nd, blocked here), release.
    async with env(lease_ttl=1.0) as (client, first):
        run = await client.start(trip_with_gated_refund, run_id="crashy")
        await wait_event(started, "the second compensation to start")
        crash(first)
        before = journal(await client.history(run.run_id))
    assert before[-1] == ("step_completed", "step:ci.unship#0")
    gate.set()  # the abandoned attempt may finish now; its result goes nowhere

    async with env(lease_ttl=1.0) as (client, _):
        with pytest.raises(keel.RunFailedError) as info:
            await client.result("crashy", timeout=20)
        after = journal(await client.history("crashy"))
    assert info.value.error_type == "keel.errors.StepFailedError"
    assert [(t, c and c.replace("gated_", "")) for t, c in after] == expected
    assert after[: len(before)] == before
    assert calls["unship box"] == 1 and calls["release room"] == 1
    for forward in ("reserve room", "charge 5", "ship box"):
        assert calls[forward] == 1
    assert calls["gated refund receipt-5"] == 2  # in flight at the crash: at least once


@keel.step(name="ci.gated_refund", retry=FAST)
def gated_refund(result: str) -> None:
    note(f"gated refund {result}")
    started.set()
    if not gate.wait(20):
        raise TimeoutError("gate never opened")


@keel.step(name="ci.gated_charge", compensate=gated_refund)
def gated_charge(amount: int) -> str:
    note(f"charge {amount}")
    return f"receipt-{amount}"


@keel.workflow(name="ci.trip_with_gated_refund")
async def trip_with_gated_refund() -> str:
    async with keel.saga():
        await reserve("room")
        await gated_charge(5)
        await ship("box")
        await boom()
    return "unreachable"
