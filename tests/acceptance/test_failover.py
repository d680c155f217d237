"""Failover without waiting for the lease: real ``keel worker`` processes, the
default 30 s lease TTL, SQLite and PostgreSQL.

A SIGKILLed worker's liveness lock (a flock on SQLite, a session advisory lock
on PostgreSQL) goes with its process, so another worker takes its runs long
before their leases would expire: every deadline below (15 s) is well under
the TTL, which is what proves the early takeover. A worker that is alive but
stopped (SIGSTOP: it still holds its lock) keeps its runs.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.apps import flows
from tests.acceptance.harness import Harness, WorkerProcess
from tests.pg import pg_url, postgres_server  # noqa: F401  (fixtures)

pytestmark = pytest.mark.acceptance

TTL = 30.0  # the default lease TTL of `keel worker`
DEADLINE = 15.0  # well under TTL: a run moved by this deadline moved early
FIVE = ["acc.s1", "acc.s2", "acc.s3", "acc.s4", "acc.s5"]


@pytest.fixture(params=["sqlite", "postgres"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    url = None
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
    h = Harness(tmp_path, db_url=url)
    try:
        yield h
    finally:
        for proc in h.workers:  # a stopped process must be continued to be killed cleanly
            if proc.alive():
                os.kill(proc.pid, signal.SIGCONT)
        h.cleanup()


def ready(proc: WorkerProcess) -> bool:
    return " started: " in proc.err.read_text(errors="replace")


def s3_started_by(harness: Harness, run_ids: list[str], proc: WorkerProcess) -> bool:
    """Whether ``proc`` is inside the gated step of every one of ``run_ids``."""
    started = {e.run_id for e in harness.executions() if e.step == "acc.s3" and e.pid == proc.pid}
    return started >= set(run_ids)


async def hold_runs(
    harness: Harness, prefix: str, count: int, gate: str
) -> tuple[WorkerProcess, list[str]]:
    """A worker (room for exactly ``count`` runs) holding ``count`` new runs in
    their gated step 3."""
    proc = harness.worker(lease_ttl=TTL, poll_interval=0.05, concurrency=count)
    await harness.wait_for(lambda: ready(proc), f"{proc.name} to start", alive=(proc,))
    run_ids = [f"{prefix}-{i}" for i in range(count)]
    async with harness.client() as client:
        for i, run_id in enumerate(run_ids):
            await client.start(flows.five_steps, i, gate, run_id=run_id)
    await harness.wait_for(
        lambda: s3_started_by(harness, run_ids, proc),
        f"{proc.name} to hold {count} runs in step 3",
        alive=(proc,),
    )
    return proc, run_ids


async def test_sigkilled_workers_runs_move_well_within_the_ttl(harness: Harness) -> None:
    """kill -9 a worker holding runs: a running worker finishes them long before
    their 30 s leases expire; journaled steps do not run again."""
    a, run_ids = await hold_runs(harness, "dead", 8, "dead")
    b = harness.worker(lease_ttl=TTL, poll_interval=0.05)
    await harness.wait_for(lambda: ready(b), "worker B to start", alive=(b,))

    a.kill()
    harness.open_gate("dead")
    async with harness.client() as client:
        infos = await harness.wait_finished(client, run_ids, timeout=DEADLINE, alive=(b,))
        for i, run_id in enumerate(run_ids):
            assert infos[run_id].state == "completed", infos[run_id].error
            assert await client.result(run_id) == flows.five_steps_expected(i)

    started = harness.started()
    by_b = Counter(e.step for e in harness.executions() if e.pid == b.pid and e.phase == "start")
    for run_id in run_ids:
        # Journaled before the kill: exactly once. In flight at the kill: once
        # more, by B. After it: once, by B.
        assert [started[(run_id, s)] for s in FIVE] == [1, 1, 2, 1, 1], run_id
    assert by_b == Counter({"acc.s3": 8, "acc.s4": 8, "acc.s5": 8})


async def test_stopped_worker_keeps_its_runs_while_a_dead_ones_move(harness: Harness) -> None:
    """SIGSTOP worker A (alive but slow: it still holds its lock) and SIGKILL
    worker C: B takes and finishes C's runs, which proves B looked for dead
    workers while A was stopped, yet takes none of A's. After SIGCONT, A
    finishes its own runs and every step ran exactly once."""
    a, slow_ids = await hold_runs(harness, "slow", 4, "slow")
    c, dead_ids = await hold_runs(harness, "dead", 4, "dead")
    b = harness.worker(lease_ttl=TTL, poll_interval=0.05)
    await harness.wait_for(lambda: ready(b), "worker B to start", alive=(b,))

    os.kill(a.pid, signal.SIGSTOP)
    c.kill()
    harness.open_gate("dead")
    async with harness.client() as client:
        infos = await harness.wait_finished(client, dead_ids, timeout=DEADLINE, alive=(b,))
        assert {infos[r].state for r in dead_ids} == {"completed"}

        # B has swept for dead workers while A was stopped; A's runs stayed A's.
        for run_id in slow_ids:
            assert (await client.get(run_id)).state == "running"
        assert not [e for e in harness.executions() if e.run_id in slow_ids and e.pid != a.pid]

        os.kill(a.pid, signal.SIGCONT)
        harness.open_gate("slow")
        infos = await harness.wait_finished(client, slow_ids, timeout=DEADLINE, alive=(a, b))
        for run_id in slow_ids:
            assert infos[run_id].state == "completed", infos[run_id].error

    started = harness.started()
    for run_id in slow_ids:
        assert [started[(run_id, s)] for s in FIVE] == [1, 1, 1, 1, 1], run_id
    assert all(e.pid == a.pid for e in harness.executions() if e.run_id in slow_ids)
