"""Saga compensations, on the pure core (no store, no worker)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import keel
from keel.core import codec
from keel.core.events import EventType
from tests.unit.sim import boom, calls, charge, cleanup, drive, replay, reserve, start


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()


async def trip(fail: bool) -> str:
    async with keel.saga():
        await reserve("a")
        await charge(5)
        await reserve("b")
        if fail:
            await boom()
    return "booked"


def test_saga_compensates_newest_first_on_failure_and_replays() -> None:
    ex = start(trip, True)
    drive(ex)
    assert ex.outcome is not None and ex.outcome.status == "failed"
    assert isinstance(ex.outcome.error, keel.StepFailedError)
    assert calls == [
        "reserve a",
        "charge 5",
        "reserve b",
        "boom",
        "release hold-b",
        "refund 5",
        "release hold-a",
    ]
    compensations = [e.command for e in ex.journal if e.seq > 4]
    assert compensations == ["step:u.release#0", "step:u.refund#0", "step:u.release#1"]
    calls.clear()
    again = replay(trip, list(ex.journal), True)
    assert again.outcome is not None and again.outcome.status == "failed"
    assert calls == [] and again.outbox == []


def test_saga_that_succeeds_compensates_nothing() -> None:
    ex = start(trip, False)
    drive(ex)
    assert ex.outcome is not None and ex.outcome.result == b'"booked"'
    assert calls == ["reserve a", "charge 5", "reserve b"]


def test_crash_after_the_first_of_three_compensations_runs_only_the_rest() -> None:
    ex = start(trip, True)
    drive(ex, steps=5)  # 4 forward steps, then the first compensation
    assert calls[-1] == "release hold-b"
    crashed = list(ex.journal)
    calls.clear()
    again = replay(trip, crashed, True)
    assert [c.key for c in again.pending()] == ["step:u.refund#0"]
    drive(again)
    assert again.outcome is not None and again.outcome.status == "failed"
    assert calls == ["refund 5", "release hold-a"]  # release hold-b never again


async def trip_reporting(parallel: bool) -> dict[str, Any]:
    saga = keel.saga(parallel=parallel)
    try:
        async with saga:
            await reserve("a")
            await charge(13)  # its refund fails
            await reserve("b")
            await boom()
    except keel.StepFailedError as exc:
        return {
            "error": exc.step,
            "failures": [f.step for f in saga.failures if isinstance(f, keel.StepFailedError)],
            "compensated": saga.compensated,
            "notes": getattr(exc, "__notes__", []),
        }
    return {}


def test_failed_compensation_is_recorded_and_the_others_still_run() -> None:
    ex = start(trip_reporting, False)
    drive(ex)
    assert ex.outcome is not None and ex.outcome.status == "completed"
    report = codec.decode(ex.outcome.result or b"")
    assert report["error"] == "u.boom"
    assert report["failures"] == ["u.refund"]
    assert report["compensated"] == ["u.release", "u.release"]
    assert len(report["notes"]) == 1 and "refund rejected" in report["notes"][0]
    assert calls[-3:] == ["release hold-b", "refund 13", "release hold-a"]
    failed = [e for e in ex.journal if e.type is EventType.STEP_FAILED]
    assert [e.command for e in failed] == ["step:u.boom#0", "step:u.refund#0"]


def test_parallel_saga_issues_every_compensation_at_once() -> None:
    ex = start(trip_reporting, True)
    drive(ex, steps=4)
    assert sorted(c.key for c in ex.pending()) == [
        "step:u.refund#0",
        "step:u.release#0",
        "step:u.release#1",
    ]
    drive(ex, pick=lambda cmds: cmds[-1])  # completion order does not matter
    assert ex.outcome is not None and ex.outcome.status == "completed"
    assert codec.decode(ex.outcome.result or b"")["failures"] == ["u.refund"]
    again = replay(trip_reporting, list(ex.journal), True)
    assert again.outcome is not None and again.outcome.result == ex.outcome.result


async def trip_until_cancelled() -> None:
    async with keel.saga():
        await reserve("a")
        await charge(5)
        await keel.wait_for_signal("confirm")


def test_cancelled_saga_compensates_then_ends_cancelled() -> None:
    ex = start(trip_until_cancelled)
    drive(ex)
    ex.cancel()
    drive(ex)
    assert ex.outcome is not None and ex.outcome.status == "cancelled"
    assert calls[-2:] == ["refund 5", "release hold-a"]
    again = replay(trip_until_cancelled, list(ex.journal))
    assert again.outcome is not None and again.outcome.status == "cancelled"


def test_cancel_during_compensation_waits_for_it_then_cancels() -> None:
    ex = start(trip, True)
    drive(ex, steps=5)  # failed; the first compensation done
    ex.cancel()
    assert [c.key for c in ex.pending()] == ["step:u.refund#0"]  # shielded: still there
    drive(ex)
    assert calls[-3:] == ["release hold-b", "refund 5", "release hold-a"]
    assert ex.outcome is not None and ex.outcome.status == "cancelled"
    assert isinstance(ex.outcome.error, keel.WorkflowCancelled)
    assert isinstance(ex.outcome.error.__cause__, keel.StepFailedError)
    again = replay(trip, list(ex.journal), True)
    assert again.outcome is not None and again.outcome.status == "cancelled"


def test_saga_waits_for_a_parallel_step_still_running_and_undoes_it() -> None:
    async def fan_out() -> None:
        async with keel.saga():
            await asyncio.gather(reserve("a"), boom(), reserve("b"))

    ex = start(fan_out)
    drive(ex, pick=lambda cmds: next(c for c in cmds if c.id.name == "u.boom"), steps=1)
    drive(ex, steps=1)  # boom failed; reserve a completes after it
    assert [c.key for c in ex.pending()] == ["step:u.reserve#1"]  # no compensation yet
    drive(ex)
    assert ex.outcome is not None and ex.outcome.status == "failed"
    assert calls == ["boom", "reserve a", "reserve b", "release hold-b", "release hold-a"]


def test_nested_sagas_pass_committed_compensations_outwards() -> None:
    async def nested() -> None:
        async with keel.saga():
            await reserve("outer")
            async with keel.saga():
                await reserve("inner")
            try:
                async with keel.saga():
                    await charge(5)
                    await boom()
            except keel.StepFailedError:
                calls.append("inner failure handled")
            await boom()

    ex = start(nested)
    drive(ex)
    assert ex.outcome is not None and ex.outcome.status == "failed"
    assert calls == [
        "reserve outer",
        "reserve inner",
        "charge 5",
        "boom",
        "refund 5",
        "inner failure handled",
        "boom",
        "release hold-inner",
        "release hold-outer",
    ]


def test_explicit_compensations_and_compensate_now() -> None:
    async def explicit() -> list[str]:
        async with keel.saga() as saga:
            saga.add(cleanup, "before charge")
            await charge(7)
            await saga.compensate()  # a decision, not an exception
            await reserve("x")
        return saga.compensated

    ex = start(explicit)
    drive(ex)
    assert ex.outcome is not None and codec.decode(ex.outcome.result or b"") == [
        "u.refund",
        "u.cleanup",
    ]
    assert calls == ["charge 7", "refund 7", "cleanup before charge", "reserve x"]


def test_compensable_steps_outside_a_saga_are_not_compensated() -> None:
    async def no_saga() -> None:
        await charge(5)
        await boom()

    ex = start(no_saga)
    drive(ex)
    assert ex.outcome is not None and ex.outcome.status == "failed"
    assert calls == ["charge 5", "boom"]


def test_compensation_receives_arguments_by_name_and_the_result() -> None:
    got: list[dict[str, Any]] = []

    @keel.step(name="u.undo_by_name")
    def undo(card: str, result: str, amount: int = 0) -> None:
        got.append({"card": card, "result": result, "amount": amount})

    @keel.step(name="u.pay", compensate=undo)
    def pay(amount: int, card: str = "amex") -> str:
        return f"paid {amount}"

    async def flow() -> None:
        async with keel.saga():
            await pay(3)
            await pay(card="visa", amount=4)
            await boom()

    ex = start(flow)
    drive(ex)
    assert got == [
        {"card": "visa", "result": "paid 4", "amount": 4},
        {"card": "amex", "result": "paid 3", "amount": 3},
    ]


# --- bad input --------------------------------------------------------------------------------


def test_bad_compensations_are_configuration_errors_at_decoration() -> None:
    registry = keel.Registry()

    def plain(x: int) -> None: ...

    with pytest.raises(keel.ConfigurationError, match=r"takes a @keel\.step"):
        keel.step(compensate=plain, registry=registry)  # type: ignore[call-overload]

    @keel.step(name="u.bad.undo_needs_y", registry=registry)
    def needs_y(y: int) -> None: ...

    with pytest.raises(keel.ConfigurationError, match="needs 'y'"):

        @keel.step(name="u.bad.one", compensate=needs_y, registry=registry)
        def one(x: int) -> None: ...

    @keel.step(name="u.bad.positional", registry=registry)
    def positional(x: int, /) -> None: ...

    with pytest.raises(keel.ConfigurationError, match="positional-only"):

        @keel.step(name="u.bad.two", compensate=positional, registry=registry)
        def two(x: int) -> None: ...

    @keel.step(name="u.bad.takes_result", registry=registry)
    def takes_result(result: int) -> None: ...

    with pytest.raises(keel.ConfigurationError, match="named 'result'"):

        @keel.step(name="u.bad.three", compensate=takes_result, registry=registry)
        def three(result: int) -> None: ...

    assert registry.step_names() == [
        "u.bad.positional",
        "u.bad.takes_result",
        "u.bad.undo_needs_y",
    ]


def test_saga_misuse_is_a_clear_error() -> None:
    with pytest.raises(keel.ConfigurationError, match="parallel"):
        keel.saga(parallel="yes")  # type: ignore[arg-type]

    async def outside() -> None:
        async with keel.saga():
            pass

    with pytest.raises(keel.WorkflowError, match="inside a workflow"):
        asyncio.run(outside())

    async def misuse(case: str) -> str:
        saga = keel.saga()
        if case == "add-closed":
            saga.add(cleanup, "x")
        async with saga:
            if case == "add-non-step":
                saga.add(print, "x")  # type: ignore[arg-type]
            if case == "add-unencodable":
                saga.add(cleanup, object())
        if case == "reuse":
            async with saga:
                pass
        return "?"

    expected = {
        "add-closed": keel.WorkflowError,
        "add-non-step": keel.ConfigurationError,
        "add-unencodable": keel.SerializationError,
        "reuse": keel.WorkflowError,
    }
    for case, error in expected.items():
        ex = start(misuse, case)
        assert ex.outcome is not None and ex.outcome.status == "failed", case
        assert isinstance(ex.outcome.error, error), (case, ex.outcome.error)
