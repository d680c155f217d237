"""Delivering a queued graph node, on every backend: workers racing for it run
it once, and a stale delivery (an expired task lease) is rejected and changes
nothing."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

import keel
from keel.core import codec
from keel.errors import LeaseLostError
from keel.graph import Graph
from tests.integration._support import wait_until

executed: Counter[str] = Counter()
_lock = threading.Lock()

race = Graph("gd.race")


@race.node(queue="gd-q")
def deliver(x: int) -> int:
    with _lock:
        executed[f"deliver:{x}"] += 1
    return x * 2


race_wf = race.build()
COMMAND = "step:gd.race.deliver#0"


@pytest.fixture(autouse=True)
def _reset() -> None:
    executed.clear()


async def test_two_workers_racing_for_queued_nodes_run_each_once(
    make_store: Callable[[], Any],
) -> None:
    options: dict[str, Any] = {"poll_interval": 0.02, "lease_ttl": 5.0, "cache": False}
    async with (
        keel.Worker(make_store(), **options) as runner,
        keel.Worker(make_store(), queues=["gd-q"], schedules=False, **options),
        keel.Worker(make_store(), queues=["gd-q"], schedules=False, **options),
    ):
        client = runner.client()
        runs = [await client.start(race_wf, x=i) for i in range(20)]
        results = await asyncio.gather(*(run.result(timeout=30) for run in runs))
    assert results == [{"deliver": 2 * i} for i in range(20)]
    assert executed == Counter({f"deliver:{i}": 1 for i in range(20)})


async def test_a_stale_delivery_is_rejected_and_changes_nothing(
    make_store: Callable[[], Any],
) -> None:
    async with keel.Worker(make_store(), poll_interval=0.02, cache=False) as runner:
        store = runner.store
        client = runner.client()
        run = await client.start(race_wf, x=21)
        await wait_until(lambda: store.tasks.get(run.run_id, COMMAND), "the node's task")
        [(stale, _)] = await store.tasks.claim("racer-a", ["gd-q"], limit=1, ttl=0.05)

        async def taken_over() -> Any:
            return await store.tasks.claim("racer-b", ["gd-q"], limit=1, ttl=30.0)

        [(fresh, _)] = await wait_until(taken_over, "racer-a's task lease to expire")
        before = await client.history(run.run_id)
        with pytest.raises(LeaseLostError):
            await store.tasks.complete(stale, codec.encode(999))
        assert await client.history(run.run_id) == before  # nothing journaled
        task = await store.tasks.get(run.run_id, COMMAND)
        assert task is not None and task.lease_owner == "racer-b" and task.result is None
        await store.tasks.complete(fresh, codec.encode(42))
        assert await run.result(timeout=20) == {"deliver": 42}
    assert executed == Counter()  # delivered by hand: the body never ran
