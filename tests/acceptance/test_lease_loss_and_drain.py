"""A worker that lost its lease stops the run's steps; a drain that times out
says what it abandoned and exits. Real ``keel worker`` processes, paused with
SIGSTOP and stopped with SIGTERM; step bodies log to a file (see harness)."""

from __future__ import annotations

import os
import signal
from collections import Counter

import keel
from tests.acceptance.apps import lease_loss
from tests.acceptance.harness import APPS, Execution, Harness, WorkerProcess, step_completions

APP = f"{APPS}.lease_loss"


def lines_of(harness: Harness, proc: WorkerProcess, run_id: str) -> list[Execution]:
    return [e for e in harness.executions() if e.pid == proc.pid and e.run_id == run_id]


async def _pause_until_taken_over(
    harness: Harness, client: keel.Client, run_id: str, step: str, w1: WorkerProcess
) -> WorkerProcess:
    """Wait for ``w1`` to start ``step``, SIGSTOP it, and start a second worker
    that takes the run over once w1's lease has expired."""
    await harness.wait_for(
        lambda: any(e.phase == "start" for e in lines_of(harness, w1, run_id)),
        f"{step} to start on worker 1",
        alive=(w1,),
    )
    os.kill(w1.pid, signal.SIGSTOP)
    return harness.worker(APP, lease_ttl=1.0)


async def test_a_paused_worker_does_not_finish_an_async_step_after_losing_its_lease(
    harness: Harness,
) -> None:
    """SIGSTOP a worker in the middle of an async step, let another worker
    finish the run, SIGCONT the first: the first one's step is cancelled (its
    body never writes "end"), it says so in its log, and the journal holds the
    second worker's result only."""
    run_id = "ll-async"
    async with harness.client() as client:
        w1 = harness.worker(APP, lease_ttl=1.0)
        await client.start(lease_loss.async_flow, 1.5, run_id=run_id)
        w2 = await _pause_until_taken_over(harness, client, run_id, "acc.ll.nap", w1)
        try:
            infos = await harness.wait_finished(client, [run_id], timeout=30.0, alive=(w2,))
        finally:
            os.kill(w1.pid, signal.SIGCONT)
        # w1's step timer is long due now: without the fix its body resumes and ends.
        outcome = await harness.wait_for(
            lambda: [e.phase for e in lines_of(harness, w1, run_id) if e.phase != "start"],
            "worker 1's step to end or be cancelled",
            alive=(w1,),
        )
        await harness.wait_for(
            lambda: "lease lost" in w1.err.read_text(), "worker 1 to log the lost lease"
        )
        history = await client.history(run_id)
        assert w1.alive(), w1.output()
    assert outcome == ["cancelled"], harness.worker_output()
    assert infos[run_id].state == "completed"
    assert step_completions(history) == Counter({"acc.ll.nap": 1})
    ends = [e for e in harness.executions() if e.phase == "end"]
    assert [e.pid for e in ends] == [w2.pid]
    lost = [line for line in w1.err.read_text().splitlines() if "lease lost" in line]
    assert any(
        run_id in line
        and "acc.ll.async_flow" in line
        and "acc.ll.nap" in line
        and "attempt 1" in line
        for line in lost
    ), lost


async def test_a_paused_worker_does_not_resume_an_async_step_before_its_heartbeat(
    harness: Harness,
) -> None:
    """As above, with a step whose body resumes every 10 ms: after SIGCONT its
    timer fires before the heartbeat's, so the heartbeat cannot stop it in
    time; the step itself must find the lease gone as it resumes."""
    run_id = "ll-gate"
    async with harness.client() as client:
        w1 = harness.worker(APP, lease_ttl=3.0)
        await client.start(lease_loss.gate_flow, "go", run_id=run_id)
        w2 = await _pause_until_taken_over(harness, client, run_id, "acc.ll.wait_gate", w1)
        try:
            await harness.wait_for(
                lambda: lines_of(harness, w2, run_id), "worker 2 to take the step over", alive=(w2,)
            )
            harness.open_gate("go")
            infos = await harness.wait_finished(client, [run_id], timeout=30.0, alive=(w2,))
        finally:
            os.kill(w1.pid, signal.SIGCONT)
        outcome = await harness.wait_for(
            lambda: [e.phase for e in lines_of(harness, w1, run_id) if e.phase != "start"],
            "worker 1's step to end or be cancelled",
            alive=(w1,),
        )
        history = await client.history(run_id)
    assert outcome == ["cancelled"], harness.worker_output()
    assert infos[run_id].state == "completed"
    assert step_completions(history) == Counter({"acc.ll.wait_gate": 1})


async def test_a_paused_worker_tells_a_sync_step_its_lease_is_lost(harness: Harness) -> None:
    """The same with a sync step: after SIGCONT its body sees
    ``keel.cancel_requested()`` and stops before the gate opens."""
    run_id = "ll-sync"
    async with harness.client() as client:
        w1 = harness.worker(APP, lease_ttl=1.0)
        await client.start(lease_loss.sync_flow, "go", run_id=run_id)
        w2 = await _pause_until_taken_over(harness, client, run_id, "acc.ll.poll", w1)
        try:
            await harness.wait_for(
                lambda: lines_of(harness, w2, run_id), "worker 2 to take the step over", alive=(w2,)
            )
        finally:
            os.kill(w1.pid, signal.SIGCONT)
        outcome = await harness.wait_for(
            lambda: [e.phase for e in lines_of(harness, w1, run_id) if e.phase != "start"],
            "worker 1's step to see cancel_requested()",
            alive=(w1,),
        )
        harness.open_gate("go")
        infos = await harness.wait_finished(client, [run_id], timeout=30.0, alive=(w2,))
        history = await client.history(run_id)
        result = await client.result(run_id)
    assert outcome == ["cancelled"], harness.worker_output()
    assert infos[run_id].state == "completed" and result == "poll done"
    assert step_completions(history) == Counter({"acc.ll.poll": 1})
    ends = [e for e in harness.executions() if e.phase == "end"]
    assert [e.pid for e in ends] == [w2.pid]


async def test_a_drain_that_times_out_names_the_abandoned_attempt_and_exits(
    harness: Harness,
) -> None:
    """``--drain-timeout 1`` and a 5 s sync step, SIGTERM: the worker logs the
    abandoned attempt (not "drained"), releases the lease and has exited before
    the step's body reaches its end."""
    run_id = "ll-drain"
    async with harness.client() as client:
        w1 = harness.worker(APP, lease_ttl=30.0, drain_timeout=1.0)
        await client.start(lease_loss.block_flow, 5.0, run_id=run_id)
        await harness.wait_for(
            lambda: lines_of(harness, w1, run_id), "the step to start", alive=(w1,)
        )
        w1.terminate()
        await harness.wait_for(lambda: not w1.alive(), "worker 1 to exit", timeout=30.0)
        phases_at_exit = [e.phase for e in lines_of(harness, w1, run_id)]
        info = await client.get(run_id)
        # The lease was released: another worker takes the run at once.
        w2 = harness.worker(APP, lease_ttl=30.0)
        infos = await harness.wait_finished(client, [run_id], timeout=30.0, alive=(w2,))
    err = w1.err.read_text()
    assert phases_at_exit == ["start"], harness.worker_output()  # exited mid-step
    assert w1.popen.returncode == 0, err
    assert info.lease_owner is None, info
    assert infos[run_id].state == "completed"
    abandoned = [line for line in err.splitlines() if "abandoned" in line]
    assert any(
        run_id in line and "acc.ll.block" in line and "attempt 1" in line for line in abandoned
    ), err
    assert "drained in" not in err, err
