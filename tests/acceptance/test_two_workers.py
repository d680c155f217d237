"""Two ``keel worker`` processes sharing one SQLite file split the work safely."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from tests.acceptance.apps import flows
from tests.acceptance.harness import Harness, WorkerProcess, step_completions

pytestmark = pytest.mark.acceptance

THREE = ["acc.t1", "acc.t2", "acc.t3"]


def ready(proc: WorkerProcess) -> bool:
    return " started: " in proc.err.read_text(errors="replace")


@pytest.mark.timeout(120)
async def test_two_workers_one_database(harness: Harness) -> None:
    """100 runs, two workers at once: each run completes once, each step body
    runs exactly once per run, no step is journaled twice, both workers work."""
    n = 100
    run_ids = [f"pair-{i:03d}" for i in range(n)]
    # A long TTL: nothing crashes here, so no lease may expire under load.
    # Small concurrency, so neither worker can take every run at once.
    w1 = harness.worker(lease_ttl=10.0, concurrency=8)
    w2 = harness.worker(lease_ttl=10.0, concurrency=8)
    await harness.wait_for(lambda: ready(w1) and ready(w2), "both workers", alive=(w1, w2))
    async with harness.client() as client:
        await asyncio.gather(
            *(client.start(flows.three_steps, i, "", 10, run_id=r) for i, r in enumerate(run_ids))
        )
        infos = await harness.wait_finished(client, run_ids, timeout=60, alive=(w1, w2))
        results = {r: await client.result(r) for r in run_ids}
        histories = {r: await client.history(r) for r in run_ids}

    bad = {r: i.error for r, i in infos.items() if i.state != "completed"}
    assert not bad, bad
    assert results == {r: flows.three_steps_expected(i) for i, r in enumerate(run_ids)}
    runs = harness.started()
    assert runs == Counter({(r, s): 1 for r in run_ids for s in THREE})
    for run_id, history in histories.items():
        assert step_completions(history) == Counter(dict.fromkeys(THREE, 1)), run_id
        types = [e.type for e in history]
        assert types.count("run_completed") == 1 and types[-1] == "run_completed", run_id
    by_pid = Counter(e.pid for e in harness.executions())
    assert set(by_pid) == {w1.pid, w2.pid}, f"executions by worker pid: {dict(by_pid)}"
    for proc in (w1, w2):
        assert "LeaseLost" not in proc.err.read_text(), proc.output()
