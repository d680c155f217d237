"""Dispatched steps with real ``keel worker --queue`` processes on one PostgreSQL
database: the cluster-wide queue limit over several task workers, and a task
worker killed with SIGKILL mid-step.

Executions are counted from the step bodies' own log (with time stamps), never
from the journal.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.apps import pg_flows
from tests.acceptance.harness import Execution, Harness, WorkerProcess, step_completions
from tests.acceptance.test_pg_workers import PG_FLOWS, ready
from tests.pg import pg_url, postgres_server  # noqa: F401  (fixtures)

pytestmark = pytest.mark.acceptance

RENDER = "accpg.render"


@pytest.fixture
def harness(tmp_path: Path, pg_url: str) -> Iterator[Harness]:  # noqa: F811
    h = Harness(tmp_path, db_url=pg_url)
    try:
        yield h
    finally:
        h.cleanup()


def most_at_once(executions: list[Execution], step: str) -> int:
    """The most bodies of ``step`` running at one instant, over every process."""
    edges = sorted(
        (e.at, 1 if e.phase == "start" else -1)
        for e in executions
        if e.step == step and e.at is not None
    )  # at a tie an end (-1) sorts first: touching intervals do not overlap
    running = peak = 0
    for _, delta in edges:
        running += delta
        peak = max(peak, running)
    return peak


def frames_of(run: int, frames: int) -> list[str]:
    return [f"{run * 10}.{f}" for f in range(frames)]


@pytest.mark.timeout(120)
async def test_queue_limit_holds_across_task_worker_processes(harness: Harness) -> None:
    """A run worker and three task workers that would run 3 frames each (9 at
    once); the database says 4 for queue render. Every frame runs once, at most
    4 run at any instant over all processes, and every task worker takes part."""
    limit, n, frames = 4, 12, 6
    harness.cli_ok("queues", "limit", "render", str(limit), "--db", harness.db_url)
    driver = harness.worker(PG_FLOWS, lease_ttl=10.0, concurrency=20)
    renderers = tuple(
        harness.worker(PG_FLOWS, lease_ttl=10.0, concurrency=1, queues=("render=3",))
        for _ in range(3)
    )
    everyone = (driver, *renderers)
    await harness.wait_for(lambda: all(map(ready, everyone)), "four workers", alive=everyone)
    run_ids = [f"film-{i:02d}" for i in range(n)]
    async with harness.client() as client:
        for i, run_id in enumerate(run_ids):
            await client.start(pg_flows.film, i, frames, 30, run_id=run_id)
        infos = await harness.wait_finished(client, run_ids, timeout=90, alive=everyone)
        results = {r: await client.result(r) for r in run_ids}
        histories = {r: await client.history(r) for r in run_ids}
        queues = await client.queues()

    bad = {r: (i.state, i.error) for r, i in infos.items() if i.state != "completed"}
    assert not bad, bad
    for i, run_id in enumerate(run_ids):
        assert [r.split("@")[0] for r in results[run_id]] == frames_of(i, frames)
        completed = step_completions(histories[run_id])
        assert completed == Counter({"accpg.c1": 1, RENDER: frames}), run_id
    executions = harness.executions()
    renders = Counter((e.run_id, e.attempt) for e in executions if e.step == RENDER)
    assert renders == Counter({(r, 1): frames * 2 for r in run_ids})  # start + end, once
    peak = most_at_once(executions, RENDER)
    assert 2 <= peak <= limit, f"{peak} frames ran at once; the limit is {limit}"
    by_pid = Counter(e.pid for e in executions if e.step == RENDER and e.phase == "start")
    assert set(by_pid) == {w.pid for w in renderers}, dict(by_pid)
    assert driver.pid not in by_pid  # the run worker serves no queue
    assert [(q.queue, q.concurrency, q.leased) for q in queues] == [("render", limit, 0)]


@pytest.mark.timeout(120)
async def test_sigkill_of_a_task_worker_mid_step(harness: Harness) -> None:
    """A task worker dies (SIGKILL) inside frame 0 of each of its runs. Once the
    task lease expires the other task worker runs those frames again (attempt
    2: the lost attempt is consumed), every run completes, and every frame is
    journaled exactly once."""
    ttl, n, frames = 2.0, 4, 3
    driver = harness.worker(PG_FLOWS, lease_ttl=ttl, concurrency=10)
    victim = harness.worker(PG_FLOWS, lease_ttl=ttl, queues=("render=8",))
    await harness.wait_for(lambda: ready(driver) and ready(victim), "two workers")
    run_ids = [f"kill-film-{i}" for i in range(n)]
    async with harness.client() as client:
        for i, run_id in enumerate(run_ids):
            await client.start(pg_flows.film, i, frames, 0, "frame0", run_id=run_id)

        def victim_blocked() -> bool:
            stuck = {
                e.run_id
                for e in harness.executions()
                if e.pid == victim.pid and e.step == RENDER and e.phase == "start"
            }
            return len(stuck) == n

        # The victim is the only task worker: it takes every frame and blocks
        # in frame 0 of each run (its gate is never opened).
        await harness.wait_for(victim_blocked, "the victim to block in every run")
        victim.kill()
        t_kill = time.time()
        survivor = harness.worker(PG_FLOWS, lease_ttl=ttl, queues=("render=8",))
        alive: tuple[WorkerProcess, ...] = (driver, survivor)
        await harness.wait_for(lambda: ready(survivor), "the survivor", alive=alive)
        harness.open_gate(f"frame0-{survivor.pid}")
        infos = await harness.wait_finished(client, run_ids, timeout=ttl + 30, alive=alive)
        histories = {r: await client.history(r) for r in run_ids}
        results = {r: await client.result(r) for r in run_ids}

    bad = {r: (i.state, i.error) for r, i in infos.items() if i.state != "completed"}
    assert not bad, bad
    executions = harness.executions()
    for i, run_id in enumerate(run_ids):
        assert [r.split("@")[0] for r in results[run_id]] == frames_of(i, frames)
        assert step_completions(histories[run_id]) == Counter({"accpg.c1": 1, RENDER: frames})
        frame0 = [e for e in executions if e.run_id == run_id and e.step == RENDER]
        # The victim started frame 0 on attempt 1 and died; the survivor ran it on
        # attempt 2, after the task lease expired.
        retried = [e for e in frame0 if e.pid == survivor.pid and e.attempt == 2]
        assert retried and all(e.at is not None and e.at > t_kill for e in retried), frame0
        assert results[run_id][0].endswith(f"@{survivor.pid}")
