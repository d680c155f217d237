"""A run that ends takes its dispatched steps with it: a queued task is never
claimed, and a running one is stopped at its task worker's next heartbeat.
Every backend, caching off."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

import keel

started: list[int] = []
stopped: list[int] = []
finished: list[int] = []
ran_queued: list[int] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    started.clear()
    stopped.clear()
    finished.clear()
    ran_queued.clear()


@keel.step(name="dcancel.long", queue="slowq")
async def long_step(n: int) -> int:
    started.append(n)
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        stopped.append(n)
        raise
    finished.append(n)
    return n


@keel.step(name="dcancel.queued", queue="slowq")
async def queued_step(n: int) -> int:
    ran_queued.append(n)
    return n


@keel.workflow(name="dcancel.flow")
async def flow() -> int:
    return sum(await asyncio.gather(long_step(1), queued_step(2)))


async def _wait_for(cond: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_cancelling_a_run_stops_its_running_task_and_drops_the_queued_one(
    env: Any,
) -> None:
    # One slot on the queue: the long step runs, the other waits in the queue.
    async with env(queues={"slowq": 1}, lease_ttl=0.6) as (client, _):
        run = await client.start(flow)
        await _wait_for(lambda: started == [1])
        assert [(q.queue, q.available, q.leased) for q in await client.queues()] == [
            ("slowq", 1, 1)
        ]
        await client.cancel(run.run_id)
        with pytest.raises(keel.RunCancelledError):
            await run.result(timeout=10)
        # The running attempt is cut off at the next heartbeat (TTL / 3) ...
        await _wait_for(lambda: stopped == [1])
        # ... and nothing of the run is left to claim.
        assert await client.queues() == []
    assert finished == [] and ran_queued == []
