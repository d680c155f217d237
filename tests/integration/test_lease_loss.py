"""A worker whose run lease another worker takes stops that run's step
attempts at once: an async one is cancelled, a sync one sees
``keel.cancel_requested()``; neither result is journaled, the worker says
what it abandoned, and the run still finishes exactly once. Every backend."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import keel
from keel.store.base import Claimed
from keel.store.ports import Suspend, Turn
from tests.integration._support import calls, note, reset, wait_until

open_gate = threading.Event()  # lets the sync step body finish
async_gates: list[asyncio.Event] = []  # the async one's; made per test (binds to one loop)


@pytest.fixture(autouse=True)
def _reset() -> None:
    reset()
    open_gate.clear()


@keel.step(name="lost.async_body")
async def async_body(tag: str) -> str:
    note(f"{tag}:start")
    try:
        await async_gates[-1].wait()
    except asyncio.CancelledError:
        note(f"{tag}:cancelled")
        raise
    note(f"{tag}:end")
    return "async done"


@keel.step(name="lost.sync_body")
def sync_body(tag: str) -> str:
    note(f"{tag}:start")
    deadline = time.monotonic() + 30.0
    while not open_gate.is_set() and time.monotonic() < deadline:
        if keel.cancel_requested():
            note(f"{tag}:cancelled")
            return "cancelled"
        time.sleep(0.01)
    note(f"{tag}:end")
    return "sync done"


@keel.workflow(name="lost.async_flow")
async def async_flow(tag: str) -> str:
    return str(await async_body(tag))


@keel.workflow(name="lost.sync_flow")
async def sync_flow(tag: str) -> str:
    return str(await sync_body(tag))


def _pause(worker: keel.Worker) -> None:
    """Stop the worker's claims and heartbeats (its steps go on), as if its
    event loop stalled: its leases expire and it cannot re-claim them."""
    for task in worker._tasks:
        if task.get_name() in ("keel-claim", "keel-heartbeat"):
            task.cancel()


def _resume(worker: keel.Worker, *names: str) -> None:
    loop = asyncio.get_running_loop()
    make = {"keel-claim": worker._claim_loop, "keel-heartbeat": worker._heartbeat_loop}
    for name in names:
        worker._tasks.append(loop.create_task(make[name](), name=name))


@pytest.mark.parametrize(
    ("flow", "step"), [(async_flow, "lost.async_body"), (sync_flow, "lost.sync_body")]
)
async def test_a_stolen_lease_stops_the_running_step(
    env: Any,
    make_store: Callable[[], Any],
    caplog: pytest.LogCaptureFixture,
    flow: Any,
    step: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="keel.worker")
    async_gates.append(asyncio.Event())
    async with env(lease_ttl=0.5, cache=True) as (client, worker):
        _pause(worker)
        run = await client.start(flow, "t")
        await wait_until(lambda: calls["t:start"], "the step to start")
        thief = make_store()
        await thief.open()
        try:

            async def steal() -> list[Claimed]:
                got: list[Claimed] = await thief.runs.claim("thief", limit=1, ttl=30.0)
                return got

            (stolen,) = await wait_until(steal, "the lease to expire and be taken")
            assert stolen.run.run_id == run.run_id
            _resume(worker, "keel-heartbeat")  # it finds the lease gone
            await wait_until(lambda: calls["t:cancelled"], "the step to be stopped")
            await wait_until(lambda: not worker.active_runs, "the worker to drop the run")
            open_gate.set()
            async_gates[-1].set()
            journal = await client.history(run.run_id)
            # Hand the run back; the worker takes it again and runs the step anew.
            await thief.runs.commit(
                stolen.lease, Turn(stolen.run.next_seq, [], end=Suspend(await thief.now()))
            )
        finally:
            if thief is not worker.store:
                await thief.close()
        _resume(worker, "keel-claim")
        result = await run.result(timeout=20)
        history = await client.history(run.run_id)
    assert calls == {"t:start": 2, "t:cancelled": 1, "t:end": 1}
    assert not [e for e in journal if e.type.startswith("step_")]
    assert [e.name for e in history if e.type == "step_completed"] == [step]
    assert result in ("async done", "sync done")
    records = [
        r
        for r in caplog.records
        if r.name == "keel.worker"
        and r.levelno == logging.WARNING
        and "lease lost" in r.getMessage()
    ]
    lost = [r.getMessage() for r in records]
    assert len(lost) == 1, lost
    # Structured fields too (keel.observe.logs), for JSON logs and log search.
    assert (records[0].__dict__["run_id"], records[0].__dict__["workflow"]) == (
        run.run_id,
        flow.name,
    )
    assert run.run_id in lost[0] and flow.name in lost[0], lost
    assert f"step '{step}' attempt 1" in lost[0], lost
