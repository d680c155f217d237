"""mock_step: a step's body replaced for workers of this process, in a memory
store and a SQLite file; the workflow code is never touched."""

from __future__ import annotations

import traceback
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import pytest

import keel
from keel.store.memory import MemoryStore
from keel.store.sqlite import SQLiteStore
from keel.testing import assert_replays, assert_survives_crashes, mock_step

from . import fakes_app as app
from .fakes_app import CardDeclined


@pytest.fixture(autouse=True)
def _clean() -> None:
    app.done.clear()


@pytest.fixture(params=["memory", "sqlite"])
def running(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Any]:
    @asynccontextmanager
    async def run() -> AsyncIterator[keel.Client]:
        store = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "k.db")
        async with keel.Worker(store, cache=False, poll_interval=0.02) as worker:
            yield worker.client()

    return run


def step_events(history: list[keel.HistoryEvent], command: str) -> list[keel.HistoryEvent]:
    return [e for e in history if e.command == command]


async def test_returns_is_journaled_as_the_step_result(running: Any) -> None:
    async with running() as client:
        with mock_step(app.charge, returns="fake-receipt") as fake:
            run = await client.start(app.checkout, "o-1")
            assert await run.result(timeout=10) == "hold-o-1 fake-receipt"
        history = await client.history(run.run_id)
    assert app.done == ["quote o-1", "reserve o-1"]  # the real charge never ran
    assert fake.call_count == 1 and fake.calls[0].args == ("o-1", 100)
    [completed] = step_events(history, "step:fk.charge#0")
    assert completed.type == "step_completed" and completed.data["result"] == "fake-receipt"
    # A normal step result: the journal replays without the fake.
    assert assert_replays(app.checkout, history).result == "hold-o-1 fake-receipt"


async def test_raises_twice_then_returns_exercises_the_retry_policy(running: Any) -> None:
    outcomes = [ConnectionError("down"), ConnectionError("still down"), "receipt-3rd"]
    async with running() as client:
        with mock_step(app.charge, side_effect=outcomes) as fake:
            run = await client.start(app.checkout, "o-2")
            assert await run.result(timeout=10) == "hold-o-2 receipt-3rd"
        history = await client.history(run.run_id)
    assert fake.call_count == 3
    types = [e.type for e in step_events(history, "step:fk.charge#0")]
    assert types == ["step_attempt_failed", "step_attempt_failed", "step_completed"]
    assert "still down" in str(step_events(history, "step:fk.charge#0")[1].data["error"])


async def test_a_mocked_failure_runs_the_saga_compensation(running: Any) -> None:
    async with running() as client:
        with mock_step(app.charge, raises=CardDeclined("insufficient funds")) as fake:
            run = await client.start(app.checkout, "o-3")
            with pytest.raises(keel.RunFailedError) as info:
                await run.result(timeout=10)
    assert fake.call_count == 3  # every attempt of its retry policy
    assert info.value.error_type == "keel.errors.StepFailedError"
    assert "insufficient funds" in info.value.message
    assert app.done == ["quote o-3", "reserve o-3", "release o-3"]  # compensated


async def test_an_async_step_and_a_side_effect_function(running: Any) -> None:
    seen: list[str] = []

    async def cheap(order: str) -> int:  # an async fake, called with the step's arguments
        seen.append(order)
        return 7

    async with running() as client:
        with (
            mock_step(app.quote, side_effect=cheap),
            mock_step(app.charge, side_effect=lambda o, a: f"paid {a}"),
        ):
            run = await client.start(app.checkout, "o-4")
            assert await run.result(timeout=10) == "hold-o-4 paid 7"
    assert seen == ["o-4"]
    assert app.done == ["reserve o-4"]


async def test_the_real_body_is_back_after_the_with_even_after_an_error(running: Any) -> None:
    original = app.charge.fn
    with pytest.raises(RuntimeError, match="test failed"), mock_step(app.charge, returns="x"):
        assert app.charge.fn is not original
        raise RuntimeError("test failed")
    assert app.charge.fn is original
    async with running() as client:
        run = await client.start(app.checkout, "o-5")
        assert await run.result(timeout=10) == "hold-o-5 receipt-o-5"
    assert app.done == ["quote o-5", "reserve o-5", "charge o-5 100"]


async def test_a_dispatched_step_is_faked_in_the_task_worker(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "k.db")
    async with keel.Worker(store, queues=["fk-render"], poll_interval=0.02) as worker:
        with mock_step(app.render, returns="fake-pdf") as fake:
            run = await worker.client().start(app.invoice, "o-7")
            assert await run.result(timeout=10) == "fake-pdf"
    assert fake.call_count == 1 and app.done == []


async def test_outside_a_workflow_the_fake_is_what_calling_the_step_does() -> None:
    with mock_step(app.charge, returns="r") as fake, mock_step(app.quote, returns=5):
        assert app.charge("o", 1) == "r"
        assert await app.charge.aio("o", 2) == "r"
        assert await app.quote.aio("o") == 5
    assert [c.args for c in fake.calls] == [("o", 1), ("o", 2)]


def test_raises_an_instance_raises_a_fresh_copy_each_call() -> None:
    declined = CardDeclined("insufficient funds")
    caught: list[BaseException] = []
    with mock_step(app.charge, raises=declined):
        for _ in range(50):
            try:
                app.charge("o", 1)
            except CardDeclined as exc:
                caught.append(exc)
    assert len(caught) == 50 and all(str(e) == "insufficient funds" for e in caught)
    assert len({id(e) for e in caught}) == 50  # not one instance raised 50 times
    depth = len(traceback.extract_tb(caught[-1].__traceback__))
    assert depth == len(traceback.extract_tb(caught[0].__traceback__))  # no growth
    assert declined.__traceback__ is None


async def test_a_side_effect_list_that_runs_out_fails_the_attempt_and_says_so() -> None:
    with mock_step(app.charge, side_effect=["only one"]):
        assert app.charge("o", 1) == "only one"
        with pytest.raises(AssertionError, match="called 2 times, but side_effect lists 1 outcome"):
            app.charge("o", 1)


def test_bad_use_is_a_configuration_error_and_replaces_nothing() -> None:
    original = app.charge.fn
    with (
        pytest.raises(keel.ConfigurationError, match="not returns and raises"),
        mock_step(app.charge, returns="x", raises=ValueError),
    ):
        pass
    with (
        pytest.raises(keel.ConfigurationError, match=r"needs a @keel\.step"),
        mock_step(app.checkout, returns="x"),  # type: ignore[arg-type]
    ):
        pass
    with (
        pytest.raises(keel.ConfigurationError, match=r"needs a @keel\.step"),
        mock_step(len, returns=1),  # type: ignore[arg-type]
    ):
        pass
    with (
        pytest.raises(keel.ConfigurationError, match="raises= takes an exception"),
        mock_step(app.charge, raises="boom"),  # type: ignore[arg-type]
    ):
        pass
    with (
        pytest.raises(keel.ConfigurationError, match="side_effect= takes a function or a list"),
        mock_step(app.charge, side_effect="boom"),
    ):
        pass
    with (
        pytest.raises(keel.SerializationError, match=r"mock_step\('fk\.charge'\) returns="),
        mock_step(app.charge, returns=object()),
    ):
        pass
    assert app.charge.fn is original


async def test_crash_every_write_counts_a_mocked_step() -> None:
    with mock_step(app.charge, returns="mocked") as fake:
        report = await assert_survives_crashes(app.checkout, "o-6")
    assert report.outcome.result == "hold-o-6 mocked"
    assert report.executions["fk.charge"] == 1
    assert fake.call_count >= 1 + len(report.points)  # once per run, more after some crashes


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_a_saga_compensating_a_mocked_failure_survives_a_crash_at_every_write(
    store: Literal["memory", "sqlite"],
) -> None:
    with mock_step(app.charge, raises=CardDeclined("insufficient funds")):
        report = await assert_survives_crashes(app.checkout, "o-8", store=store)
    assert report.outcome.state == "failed"
    assert "insufficient funds" in (report.outcome.error_message or "")
    assert report.executions == {"fk.quote": 1, "fk.reserve": 1, "fk.charge": 3, "fk.release": 1}
    # Some crash came while the compensation's completion was not journaled:
    # it ran again there (at-least-once), and the run still failed the same way.
    assert any(e.step == "fk.release" for p in report.points for e in p.repeats)
