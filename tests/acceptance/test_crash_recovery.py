"""Crashes and restarts of real ``keel worker`` processes on one SQLite file.

SIGKILL lands while a step is provably in flight (it blocks on a gate file the
test opens only after the kill); executions are counted from the step bodies'
own log, never from the journal.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

import keel
from tests.acceptance.apps import flows
from tests.acceptance.harness import Harness, step_completions

pytestmark = pytest.mark.acceptance

FIVE = ["acc.s1", "acc.s2", "acc.s3", "acc.s4", "acc.s5"]
THREE = ["acc.t1", "acc.t2", "acc.t3"]


def assert_contiguous(history: list[keel.HistoryEvent]) -> None:
    seqs = [e.seq for e in history]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"journal has gaps: {seqs}"


async def test_sigkill_mid_workflow(harness: Harness) -> None:
    """kill -9 while step 3 of 5 runs: the run completes on a new worker, steps
    journaled before the kill never run again, the in-flight one runs again."""
    run_id = "crash-1"
    async with harness.client() as client:
        w1 = harness.worker()
        await client.start(flows.five_steps, 4, "s3", run_id=run_id)
        await harness.wait_for(
            lambda: harness.started()[(run_id, "acc.s3")], "step 3 to start", alive=(w1,)
        )
        w1.kill()
        assert w1.popen.returncode == -9
        before_kill = await client.history(run_id)
        started_before = harness.started()

        # The durability rule: steps 1-2 were committed before step 3 started.
        assert step_completions(before_kill) == Counter({"acc.s1": 1, "acc.s2": 1})
        assert (await client.get(run_id)).state == "running"  # held by a dead worker

        harness.open_gate("s3")
        w2 = harness.worker()
        infos = await harness.wait_finished(client, [run_id], alive=(w2,))
        assert infos[run_id].state == "completed", infos[run_id].error
        assert await client.result(run_id) == flows.five_steps_expected(4)
        after = await client.history(run_id)

    runs = harness.started()
    assert started_before[(run_id, "acc.s3")] == 1
    for name in ("acc.s1", "acc.s2"):  # journaled before the kill: exactly once
        assert runs[(run_id, name)] == 1, f"{name} ran {runs[(run_id, name)]} times"
    # In flight at the kill: at least once, at most twice. It never finished on
    # the killed worker (its gate was shut), so here it ran exactly twice.
    assert runs[(run_id, "acc.s3")] == 2
    finished = [e for e in harness.executions() if e.step == "acc.s3" and e.phase == "end"]
    assert [e.pid for e in finished] == [w2.pid]
    for name in ("acc.s4", "acc.s5"):
        assert runs[(run_id, name)] == 1
    assert step_completions(after) == Counter(dict.fromkeys(FIVE, 1))
    assert [(e.seq, e.type, e.command, e.data) for e in after[: len(before_kill)]] == [
        (e.seq, e.type, e.command, e.data) for e in before_kill
    ]
    assert_contiguous(after)
    assert after[-1].type == "run_completed"
    assert [e.type for e in after].count("run_completed") == 1


@pytest.mark.timeout(120)
async def test_sigkill_under_load(harness: Harness) -> None:
    """50 runs of a 3-step workflow, kill -9 part way: every run completes and
    no step journaled before the kill runs again."""
    n = 50
    run_ids = [f"load-{i:02d}" for i in range(n)]
    gated = {f"load-{i:02d}" for i in range(n) if i % 2}  # their step 2 blocks until the kill
    async with harness.client() as client:
        w1 = harness.worker()
        for i, run_id in enumerate(run_ids):
            gate = "load" if run_id in gated else ""
            await client.start(flows.three_steps, i, gate, 100, run_id=run_id)

        def part_way() -> bool:
            started = harness.started()
            return sum(started.values()) >= 60 and any((r, "acc.t2") in started for r in gated)

        await harness.wait_for(part_way, "60 step executions", alive=(w1,), interval=0.005)
        w1.kill()
        started_before = harness.started()
        snapshot = {r: step_completions(await client.history(r)) for r in run_ids}

        journaled = {(r, s) for r, c in snapshot.items() for s in c}
        in_flight = set(started_before) - journaled
        assert journaled, "the kill came before any step was journaled"
        assert in_flight, "no step was in flight at the kill"
        assert not any(snapshot[r]["acc.t3"] for r in gated), "a gated run got past its gate"
        done = [r for r in run_ids if snapshot[r]["acc.t3"]]
        # The premise: the kill landed while ungated runs were still at work.
        assert len(done) < n - len(gated), "every ungated run finished before the kill"

        harness.open_gate("load")
        w2 = harness.worker()
        infos = await harness.wait_finished(client, run_ids, timeout=60, alive=(w2,))
        results = {r: await client.result(r) for r in run_ids}
        histories = {r: await client.history(r) for r in run_ids}

    bad = {r: i.error for r, i in infos.items() if i.state != "completed"}
    assert not bad, bad
    assert results == {r: flows.three_steps_expected(i) for i, r in enumerate(run_ids)}
    runs = harness.started()
    for run_id, step in journaled:
        assert runs[(run_id, step)] == 1, f"{run_id}/{step} was journaled before the kill"
    for run_id in run_ids:
        for step in THREE:
            assert 1 <= runs[(run_id, step)] <= 2, (run_id, step, runs[(run_id, step)])
        assert step_completions(histories[run_id]) == Counter(dict.fromkeys(THREE, 1))
        assert histories[run_id][-1].type == "run_completed"
        assert_contiguous(histories[run_id])
    for run_id, step in in_flight:
        assert runs[(run_id, step)] >= 1  # and at most 2, checked above


async def test_sleep_survives_sigkill(harness: Harness) -> None:
    """A 3 s durable sleep suspends the run; kill -9 the worker during it; a new
    worker wakes the run when the timer is due, not before, and only once."""
    run_id = "sleep-1"
    async with harness.client() as client:
        w1 = harness.worker()
        t0 = time.monotonic()
        await client.start(flows.sleeper, 3.0, run_id=run_id)

        async def sleeping() -> bool:
            info = await client.get(run_id)
            history = await client.history(run_id)
            return info.state == "suspended" and any(e.type == "timer_started" for e in history)

        await harness.wait_for(sleeping, "the run to suspend in its sleep", alive=(w1,))
        history = await client.history(run_id)
        timer_set = next(e for e in history if e.type == "timer_started").created_at.timestamp()
        # Kill 1 s into the sleep, so a timer that restarted would fire late.
        await harness.wait_for(lambda: time.time() >= timer_set + 1.0, "1 s of sleep")
        assert time.time() < timer_set + 2.0, "too slow to kill the worker during the sleep"
        w1.kill()
        w2_spawned = time.time()
        w2 = harness.worker()
        infos = await harness.wait_finished(client, [run_id], alive=(w2,))
        elapsed = time.monotonic() - t0
        slept = await client.result(run_id)
        history = await client.history(run_id)

    assert infos[run_id].state == "completed", infos[run_id].error
    assert elapsed >= 3.0
    assert slept >= 3.0  # measured by the workflow's journaled now()
    types = Counter(e.type for e in history)
    assert types["timer_started"] == 1
    assert types["timer_fired"] == 1
    fired = next(e for e in history if e.type == "timer_fired")
    started = next(e for e in history if e.type == "timer_started")
    fire_at = started.data["fire_at"]
    assert fire_at - started.created_at.timestamp() == pytest.approx(3.0, abs=0.5)
    # Fired when due: not early, and not a whole sleep after the restart. A
    # timer restarted by w2 would fire 3 s after w2 claimed the run, so at
    # least 3 s after it was spawned; a kept one fires when due, or as soon as
    # w2 is up if its start-up outlasted the sleep (slow on a loaded machine).
    assert fire_at <= fired.created_at.timestamp() < max(fire_at + 0.9, w2_spawned + 2.5)
    runs = harness.started()
    assert runs[(run_id, "acc.before_sleep")] == 1
    assert runs[(run_id, "acc.after_sleep")] == 1
    assert {e.pid for e in harness.executions() if e.step == "acc.after_sleep"} == {w2.pid}


async def test_sigterm_drains_and_releases_the_lease(harness: Harness) -> None:
    """SIGTERM while a 1 s step runs: the worker lets it finish, journals it,
    releases the lease and exits 0; the next worker (30 s lease TTL) carries on
    at once and does not repeat the step."""
    run_id = "drain-1"
    async with harness.client() as client:
        w1 = harness.worker(lease_ttl=30.0, drain_timeout=10.0)
        await client.start(flows.drain, 1.0, run_id=run_id)
        await harness.wait_for(
            lambda: harness.started()[(run_id, "acc.slow")], "the slow step to start", alive=(w1,)
        )
        t_term = time.monotonic()
        w1.terminate()
        code = w1.wait(timeout=15)
        drained_in = time.monotonic() - t_term
        assert code == 0, w1.output()
        assert drained_in < 10.0
        history = await client.history(run_id)
        info = await client.get(run_id)
        ends = [e for e in harness.executions() if e.phase == "end"]
        assert [(e.step, e.pid) for e in ends] == [("acc.slow", w1.pid)], "step did not finish"
        assert step_completions(history) == Counter({"acc.slow": 1})
        assert info.state != "running" and info.lease_owner is None, info  # lease released

        t_restart = time.monotonic()
        w2 = harness.worker(lease_ttl=30.0)
        infos = await harness.wait_finished(client, [run_id], timeout=10.0, alive=(w2,))
        took = time.monotonic() - t_restart
        result = await client.result(run_id)
        after = await client.history(run_id)

    assert infos[run_id].state == "completed", infos[run_id].error
    assert result == "slow done, quick done"
    assert took < 10.0, f"the second worker needed {took:.1f}s (waited for the lease TTL?)"
    runs = harness.started()
    assert runs[(run_id, "acc.slow")] == 1
    assert runs[(run_id, "acc.quick")] == 1
    assert step_completions(after) == Counter({"acc.slow": 1, "acc.quick": 1})
