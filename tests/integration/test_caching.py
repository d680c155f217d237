"""``cache=True`` on steps and graph nodes, on every backend: equal inputs to
the same code reuse the first result across runs without running the body;
other inputs run; concurrent equal calls converge; the journal alone replays."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import Counter
from typing import Any

import pytest

import keel
from keel.graph import Graph

bodies: Counter[str] = Counter()
_lock = threading.Lock()


def ran(name: str) -> None:
    with _lock:
        bodies[name] += 1


@pytest.fixture(autouse=True)
def _reset() -> None:
    bodies.clear()


@keel.step(name="cache.price", cache=True)
def price(sku: str, qty: int) -> int:
    ran(f"price:{sku}:{qty}")
    return len(sku) * qty


@keel.step(name="cache.token", cache=True)
def token(seed: int) -> str:
    ran("token")
    return uuid.uuid4().hex  # a different value on every execution


@keel.workflow(name="cache.quote")
async def quote(sku: str, qty: int) -> int:
    return await price.aio(sku, qty)


@keel.workflow(name="cache.tokens")
async def tokens(seed: int) -> str:
    return await token.aio(seed)


async def test_a_second_run_with_equal_inputs_runs_no_body(env: Any) -> None:
    async with env() as (client, _):
        first = await client.start(quote, "mug", 3)
        assert await first.result(timeout=20) == 9
        second = await client.start(quote, "mug", 3)
        assert await second.result(timeout=20) == 9
        other = await client.start(quote, "mug", 4)
        assert await other.result(timeout=20) == 12
        [reused] = [e for e in await client.history(second.run_id) if e.type == "step_completed"]
    assert bodies == Counter({"price:mug:3": 1, "price:mug:4": 1})
    assert reused.data["reused"] is True


async def test_concurrent_equal_calls_converge_on_one_result(env: Any) -> None:
    async with env() as (client, _):
        runs = [await client.start(tokens, 7) for _ in range(5)]
        results = await asyncio.gather(*(run.result(timeout=20) for run in runs))
    assert len(set(results)) == 1  # however many bodies ran, one result won
    assert 1 <= bodies["token"] <= 5


scoring = Graph("cache.scoring")


@scoring.map("items", cache=True)
def score(item: int) -> int:
    ran(f"score:{item}")
    return item * 10


@scoring.node
def best(score: list[int]) -> int:
    return max(score)


scoring_wf = scoring.build()


async def test_cached_graph_nodes_reuse_item_results_across_runs(env: Any) -> None:
    async with env() as (client, _):
        first = await client.start(scoring_wf, items=[1, 2, 3])
        assert await first.result(timeout=20) == {"best": 30}
        second = await client.start(scoring_wf, items=[3, 4, 1])
        assert await second.result(timeout=20) == {"best": 40}
        third = await client.start(scoring_wf, items=[1, 2, 3])
        assert await third.result(timeout=20) == {"best": 30}
        # The nodes view says which maps were served from the cache: only a
        # map whose every item was is `cached`.
        first_map = (await client.nodes(first.run_id))["score"]
        second_map = (await client.nodes(second.run_id))["score"]
        third_map = (await client.nodes(third.run_id))["score"]
    assert (first_map.status, first_map.cached) == ("completed", False)
    assert (second_map.status, second_map.cached) == ("completed", False)  # item 4 ran
    assert (third_map.status, third_map.cached) == ("completed", True)
    assert third_map.shown == "completed (cached)"
    assert bodies == Counter({"score:1": 1, "score:2": 1, "score:3": 1, "score:4": 1})


async def test_the_journal_replays_with_the_cache_emptied(tmp_path: Any) -> None:
    import sqlite3

    from keel.replay import check_runs
    from keel.store.sqlite import SQLiteStore

    path = tmp_path / "c.db"
    async with keel.Worker(SQLiteStore(path)) as worker:
        client = worker.client()
        for _ in range(2):
            run = await client.start(quote, "lamp", 2)
            assert await run.result(timeout=20) == 8
    with sqlite3.connect(path) as conn:
        assert conn.execute("DELETE FROM idempotency_keys").rowcount == 1
    store = SQLiteStore(path)
    await store.open()
    try:
        report = await check_runs(store, None)
    finally:
        await store.close()
    assert [(v.status, v.outcome) for v in report.results] == [("ok", "completed")] * 2
