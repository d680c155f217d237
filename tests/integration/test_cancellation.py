"""Cancellation with cleanup end to end, on every backend (every turn replayed
from the store unless a test says otherwise)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import keel
from tests.integration._support import (
    calls,
    journal,
    note,
    reset,
    started,
    wait_event,
    wait_state,
    wait_until,
)

saw_cancel = threading.Event()  # the long step saw keel.cancel_requested()


@pytest.fixture(autouse=True)
def _reset() -> None:
    reset()
    saw_cancel.clear()


@keel.step(name="ci.cleanup")
def cleanup(what: str) -> str:
    note(f"cleanup {what}")
    return what


@keel.workflow(name="ci.waits_then_cleans_up")
async def waits_then_cleans_up(sleep_in_cleanup: float) -> str:
    try:
        await keel.wait_for_signal("never")
    except keel.WorkflowCancelled:
        await cleanup("first")
        if sleep_in_cleanup:
            await keel.sleep(sleep_in_cleanup)  # durable, even during cleanup
        await cleanup("second")
        raise
    return "?"


async def _other() -> str:
    return "other"


@keel.step(name="ci.long_poll")
def long_poll() -> str:
    note("long started")
    started.set()
    deadline = time.monotonic() + 20
    while not keel.cancel_requested():  # the cooperative check of a long step
        if time.monotonic() > deadline:
            raise TimeoutError("never saw the cancel request")
        time.sleep(0.01)
    saw_cancel.set()
    return "stopped early"


@keel.workflow(name="ci.long_step")
async def long_step() -> str:
    try:
        return str(await long_poll())
    finally:
        await cleanup("after long step")


async def test_cancel_of_a_suspended_run_runs_its_cleanup_steps(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(waits_then_cleans_up, 0.0)
        await wait_state(client, run.run_id, keel.RunState.SUSPENDED)
        # Code ran (a signal wait is journaled): the request waits for a worker.
        assert await client.cancel(run.run_id) is keel.RunState.SUSPENDED
        with pytest.raises(keel.RunCancelledError):
            await run.result(timeout=10)
        history = await client.history(run.run_id)
        with pytest.raises(keel.RunFinishedError):
            await client.cancel(run.run_id)
    assert calls == {"cleanup first": 1, "cleanup second": 1}
    assert journal(history) == [
        ("run_started", None),
        ("signal_awaited", "signal:never#0"),
        ("cancel_requested", None),
        ("step_completed", "step:ci.cleanup#0"),
        ("step_completed", "step:ci.cleanup#1"),
        ("run_cancelled", None),
    ]


async def test_cleanup_sleeps_durably_and_a_second_cancel_does_not_interrupt_it(
    env: Any,
) -> None:
    async with env(inline_wait=0.05) as (client, worker):
        run = await client.start(waits_then_cleans_up, 1.0)
        await wait_state(client, run.run_id, keel.RunState.SUSPENDED)
        await client.cancel(run.run_id)

        async def cleanup_sleeping() -> bool:
            types = [e.type for e in await client.history(run.run_id)]
            return "timer_started" in types and (
                (await client.get(run.run_id)).state is keel.RunState.SUSPENDED
            )

        await wait_until(cleanup_sleeping, "the cleanup's sleep to suspend the run")
        info = await client.get(run.run_id)
        # Suspended until the timer, not woken again and again by the request it already got.
        assert info.cancel_requested and info.wake_at is not None
        assert info.wake_at.timestamp() > await worker.store.now() + 0.3
        assert await client.cancel(run.run_id) is keel.RunState.SUSPENDED  # a second request
        with pytest.raises(keel.RunCancelledError):
            await run.result(timeout=10)
        types = [e.type for e in await client.history(run.run_id)]
    assert calls == {"cleanup first": 1, "cleanup second": 1}
    assert types.count("cancel_requested") == 1
    assert types[-3:] == ["timer_fired", "step_completed", "run_cancelled"]


@pytest.mark.parametrize("cache", [False, True], ids=["replayed", "resident"])
async def test_long_step_sees_the_request_and_stops_early(env: Any, cache: bool) -> None:
    async with env(lease_ttl=1.5, cache=cache) as (client, worker):
        run = await client.start(long_step)
        await wait_event(started, "the long step to start")
        # A client without the worker: the worker learns of it at its heartbeat.
        other = keel.Client(worker.store)
        assert await other.cancel(run.run_id) is keel.RunState.RUNNING
        await wait_event(saw_cancel, "the step to see the cancel request")
        with pytest.raises(keel.RunCancelledError):
            await run.result(timeout=10)
        history = await client.history(run.run_id)
    assert calls == {"long started": 1, "cleanup after long step": 1}
    # The long step's result was discarded, not journaled.
    assert [e.command for e in history if e.type == "step_completed"] == ["step:ci.cleanup#0"]


async def test_cancel_waits_for_a_worker_that_has_the_workflow(env: Any) -> None:
    """No worker at all, then only workers without the workflow: the request is
    kept, the run is not claimed by them (its version is not theirs), and the
    first worker that has the workflow runs the cleanup."""
    async with env() as (client, _):
        run = await client.start(waits_then_cleans_up, 0.0)
        await wait_state(client, run.run_id, keel.RunState.SUSPENDED)
    other = keel.Registry()
    keel.workflow(name="ci.other", registry=other)(_other)
    async with env(registry=other) as (client, worker):
        token = (await worker.store.reads.get_run(run.run_id)).lease_token
        assert await client.cancel(run.run_id) is keel.RunState.SUSPENDED
        # A run the worker has, due after the cancel: once it is done, the
        # worker has claimed while the cancelled run was due, and passed it over.
        outside = keel.Client(worker.store, registry=other)  # not the worker's: no hand-over
        started = await outside.start("ci.other")
        assert await outside.result(started.run_id, timeout=10) == "other"
        record = await worker.store.reads.get_run(run.run_id)
        assert record.lease_token == token and record.state is keel.RunState.SUSPENDED
        info = await client.get(run.run_id)
        assert info.cancel_requested and info.waiting is not None
        assert info.waiting.startswith("no worker has version ")
    async with env() as (client, _):
        await client.cancel(run.run_id)
        with pytest.raises(keel.RunCancelledError):
            await client.result(run.run_id, timeout=10)
    assert calls == {"cleanup first": 1, "cleanup second": 1}
