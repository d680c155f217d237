"""A task worker (``keel worker --queue``) killed with SIGKILL mid-step, at the
default 30 s lease TTL, on SQLite and PostgreSQL: its liveness lock goes with
its process, so its dispatched steps run again on another task worker long
before their task leases would expire. The deadline below (15 s) is well under
the TTL, which is what proves the early expiry.

Executions are counted from the step bodies' own log, never from the journal.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.apps import pg_flows
from tests.acceptance.harness import Harness, WorkerProcess, step_completions
from tests.acceptance.test_pg_workers import PG_FLOWS, ready
from tests.pg import pg_url, postgres_server  # noqa: F401  (fixtures)

pytestmark = pytest.mark.acceptance

TTL = 30.0  # the default lease TTL of `keel worker`
DEADLINE = 15.0  # well under TTL: a frame run again by this deadline ran early
RENDER = "accpg.render"


@pytest.fixture(params=["sqlite", "postgres"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    url = None
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
    h = Harness(tmp_path, db_url=url)
    try:
        yield h
    finally:
        h.cleanup()


@pytest.mark.timeout(120)
async def test_sigkill_of_a_task_worker_frees_its_steps_before_the_ttl(harness: Harness) -> None:
    n, frames = 3, 2
    driver = harness.worker(PG_FLOWS, lease_ttl=TTL, concurrency=10)
    victim = harness.worker(PG_FLOWS, lease_ttl=TTL, queues=("render=8",))
    await harness.wait_for(lambda: ready(driver) and ready(victim), "two workers")
    run_ids = [f"task-kill-{i}" for i in range(n)]
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

        # The only task worker takes every frame and blocks in frame 0 of each run.
        await harness.wait_for(victim_blocked, "the victim to block in every run")
        survivor = harness.worker(PG_FLOWS, lease_ttl=TTL, queues=("render=8",))
        alive: tuple[WorkerProcess, ...] = (driver, survivor)
        await harness.wait_for(lambda: ready(survivor), "the survivor", alive=alive)
        harness.open_gate(f"frame0-{survivor.pid}")
        # Before the kill, not after it: kill() also reaps the victim, and the
        # survivor may take the frames while it does (a loaded machine widens that).
        t_kill = time.time()
        victim.kill()
        infos = await harness.wait_finished(client, run_ids, timeout=DEADLINE, alive=alive)
        histories = {r: await client.history(r) for r in run_ids}

    bad = {r: (i.state, i.error) for r, i in infos.items() if i.state != "completed"}
    assert not bad, bad
    executions = harness.executions()
    for run_id in run_ids:
        assert step_completions(histories[run_id]) == Counter({"accpg.c1": 1, RENDER: frames})
        frame0 = [e for e in executions if e.run_id == run_id and e.step == RENDER]
        # The victim started frame 0 on attempt 1 and died; the survivor ran it
        # on attempt 2 (the lost attempt is consumed), after the kill.
        retried = [e for e in frame0 if e.pid == survivor.pid and e.attempt == 2]
        assert retried and all(e.at is not None and e.at > t_kill for e in retried), frame0
