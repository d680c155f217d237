"""A finished run's state is freed by reference counting, not left in a
reference cycle for the garbage collector: at high throughput the collector's
work on such cycles was a large share of a worker's CPU."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import pytest

import keel

# The objects a run's turn builds; none of them may be left in a cycle.
RUN_STATE = {"RunDriver", "Execution", "DeterministicLoop", "Inflight", "RunEffects", "Snapshots"}


@keel.step(name="nc.add")
async def add(x: int) -> int:
    return x + 1


@keel.step(name="nc.fail", retry=keel.RetryPolicy(max_attempts=1))
def fail(x: int) -> int:
    raise ValueError(f"no {x}")


@keel.workflow(name="nc.shapes")
async def shapes(x: int) -> int:
    a, b = await asyncio.gather(add(x), add(x + 1))  # concurrent steps
    await keel.sleep(0.01)  # a timer: the run suspends and is claimed again
    return await add(a + b)


@keel.workflow(name="nc.failing")
async def failing(x: int) -> int:
    return await fail(await add(x))


@keel.workflow(name="nc.child")
async def child(x: int) -> int:
    return await add(x)


@keel.workflow(name="nc.parent")
async def parent(x: int) -> int:
    return await (await keel.start_child(child, x)).result()


@pytest.mark.parametrize("cache", [True, False])
async def test_a_finished_run_leaves_no_reference_cycle(tmp_path: Path, cache: bool) -> None:
    url = f"sqlite:///{tmp_path / 'keel.db'}"
    async with keel.Worker(url, poll_interval=0.01, cache=cache) as worker:
        client = worker.client()
        assert await (await client.start(shapes, 0)).result(timeout=20) == 4  # warm up
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)  # keep what a collection finds, to look at it
        try:
            for i in range(5):
                assert await (await client.start(shapes, i)).result(timeout=20) == 2 * i + 4
                assert await (await client.start(parent, i)).result(timeout=20) == i + 1
                with pytest.raises(keel.RunFailedError):
                    await (await client.start(failing, i)).result(timeout=20)
            gc.collect()
            found = {type(o).__name__ for o in gc.garbage}
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    assert found & RUN_STATE == set(), sorted(found)
