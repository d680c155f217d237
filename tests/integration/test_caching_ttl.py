"""A cache TTL (``cache_ttl=`` on steps, ``ttl=`` on graph nodes) bounds reuse.

On every backend: a result younger than the TTL is reused, an older one is
computed again and the new result replaces it (what later equal calls reuse).
Expiry is driven by the store's clock: a test clock on memory and SQLite, and
on PostgreSQL (whose clock is the database's) by waiting until the store clock
has passed the entry's age, never for a guessed time.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import keel
from keel.errors import ConfigurationError, GraphDefinitionError
from keel.graph import Graph
from keel.store.memory import MemoryStore
from keel.store.sqlite import SQLiteStore
from keel.testing import TestClock
from keel.testing.conformance import wait_until_past

bodies: Counter[str] = Counter()
_lock = threading.Lock()
_serial = itertools.count(1)

SHORT = 0.05  # seconds: the TTL of the tests that wait for expiry on the real clock


def ran(name: str) -> int:
    """Count an execution of ``name``'s body; return a value new on every execution."""
    with _lock:
        bodies[name] += 1
        return next(_serial)


@pytest.fixture(autouse=True)
def _reset() -> None:
    bodies.clear()


@keel.step(name="ttl.short", cache=True, cache_ttl=SHORT)
def short_lived(sku: str) -> int:
    return ran(f"short:{sku}")


@keel.step(name="ttl.long", cache=True, cache_ttl=timedelta(hours=1))
def long_lived(sku: str) -> int:
    return ran(f"long:{sku}")


@keel.step(name="ttl.minute", cache=True, cache_ttl=60)
def minute(sku: str) -> int:
    return ran(f"minute:{sku}")


@keel.step(name="ttl.queued", cache=True, cache_ttl=SHORT, queue="ttl-q")
def queued(sku: str) -> int:
    return ran(f"queued:{sku}")


@keel.workflow(name="ttl.short_wf")
async def short_wf(sku: str) -> int:
    return await short_lived.aio(sku)


@keel.workflow(name="ttl.long_wf")
async def long_wf(sku: str) -> int:
    return await long_lived.aio(sku)


@keel.workflow(name="ttl.minute_wf")
async def minute_wf(sku: str) -> int:
    return await minute.aio(sku)


@keel.workflow(name="ttl.queued_wf")
async def queued_wf(sku: str) -> int:
    return await queued.aio(sku)


async def _reused(client: keel.Client, run_id: str) -> bool:
    [done] = [e for e in await client.history(run_id) if e.type == "step_completed"]
    return bool(done.data.get("reused", False))


async def test_within_the_ttl_a_result_is_reused(env: Any) -> None:
    async with env() as (client, _):
        first = await client.start(long_wf, "mug")
        value = await first.result(timeout=20)
        second = await client.start(long_wf, "mug")
        assert await second.result(timeout=20) == value
        assert await _reused(client, second.run_id)
    assert bodies == Counter({"long:mug": 1})


async def test_past_the_ttl_the_body_runs_again_and_its_result_is_reused_next(
    env: Any,
) -> None:
    async with env() as (client, worker):
        store = worker.store
        first = await client.start(short_wf, "lamp")
        old = await first.result(timeout=20)
        await wait_until_past(store, await store.now() + SHORT)  # the entry is older now
        second = await client.start(short_wf, "lamp")
        new = await second.result(timeout=20)
        assert new != old and not await _reused(client, second.run_id)
        # The new result replaced the expired one: it is what the key holds now.
        key = _key_of(short_lived, "lamp")
        assert await store.keys.get("ttl.short", key) == str(new).encode()
        # The first run's journal still holds the value it used.
        assert await first.result(timeout=20) == old
    assert bodies == Counter({"short:lamp": 2})


def _key_of(step: Any, *args: Any) -> str:
    key = step.key_for(args, {})
    assert isinstance(key, str)
    return key


async def test_a_dispatched_step_past_the_ttl_runs_again(env: Any) -> None:
    async with env(queues=["ttl-q"]) as (client, worker):
        store = worker.store
        first = await client.start(queued_wf, "desk")
        old = await first.result(timeout=20)
        await wait_until_past(store, await store.now() + SHORT)
        second = await client.start(queued_wf, "desk")
        new = await second.result(timeout=20)
        assert new != old
        assert await store.keys.get("ttl.queued", _key_of(queued, "desk")) == str(new).encode()
    assert bodies == Counter({"queued:desk": 2})


@pytest.fixture(params=["memory", "sqlite"])
def clocked(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Any, TestClock]:
    """A store and the test clock it and its worker share."""
    clock = TestClock()
    if request.param == "memory":
        return MemoryStore(clock=clock.now), clock
    return SQLiteStore(tmp_path / "ttl.db", clock=clock.now), clock


async def test_the_ttl_is_measured_on_the_test_clock(clocked: tuple[Any, TestClock]) -> None:
    store, clock = clocked
    async with keel.Worker(store, clock=clock, cache=False, poll_interval=0.05) as worker:
        client = worker.client()

        async def run() -> tuple[int, bool]:
            handle = await client.start(minute_wf, "pen")
            value = await handle.result(timeout=20)
            return value, await _reused(client, handle.run_id)

        first, _ = await run()
        clock.advance(60)  # exactly the TTL old: still reused
        assert await run() == (first, True)
        clock.advance(0.5)  # older than the TTL: computed again
        second, reused = await run()
        assert second != first and not reused
        clock.advance(59)  # the new result's age counts from its own store
        assert await run() == (second, True)
    assert bodies == Counter({"minute:pen": 2})


g = Graph("ttl.graph")


@g.map("items", cache=True, ttl=timedelta(minutes=1))
def score(item: int) -> int:
    ran(f"score:{item}")
    return item * 10


@g.node
def total(score: list[int]) -> int:
    return sum(score)


graph_wf = g.build()


async def test_graph_node_ttl_on_the_test_clock(clocked: tuple[Any, TestClock]) -> None:
    store, clock = clocked
    async with keel.Worker(store, clock=clock, cache=False, poll_interval=0.05) as worker:
        client = worker.client()
        run = await client.start(graph_wf, items=[1, 2])
        assert await run.result(timeout=20) == {"total": 30}
        clock.advance(30)
        run = await client.start(graph_wf, items=[2, 3])
        assert await run.result(timeout=20) == {"total": 50}
        assert bodies == Counter({"score:1": 1, "score:2": 1, "score:3": 1})
        clock.advance(45)  # items 1 and 2 are 75 s old, item 3 is 45 s old
        run = await client.start(graph_wf, items=[1, 3])
        assert await run.result(timeout=20) == {"total": 40}
    assert bodies == Counter({"score:1": 2, "score:2": 1, "score:3": 1})


def test_bad_ttls_are_refused_where_they_are_declared() -> None:
    registry = keel.Registry()
    for bad in (0, -5, "1h", float("inf"), timedelta(0)):
        with pytest.raises(ConfigurationError, match="cache_ttl"):
            keel.step(name="ttl.bad", cache=True, cache_ttl=bad, registry=registry)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="needs cache=True"):
        keel.step(name="ttl.bad", cache_ttl=5, registry=registry)

    bad_graph = Graph("ttl.bad_graph")

    @bad_graph.node(cache=True, ttl=-1)
    def a(x: int) -> int:
        return x

    @bad_graph.node(ttl=5)
    def b(a: int) -> int:
        return a

    with pytest.raises(GraphDefinitionError) as info:
        bad_graph.build(registry=registry)
    problems = {(p.path, p.code) for p in info.value.problems}
    assert problems == {("nodes.a.ttl", "bad_option"), ("nodes.b.ttl", "bad_option")}
