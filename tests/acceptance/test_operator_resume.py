"""An operator resumes a run held by a ``keel worker`` that was SIGKILLed in the
middle of a step: no lease TTL to wait out, and another worker finishes it."""

from __future__ import annotations

from collections import Counter

import pytest

import keel
from tests.acceptance.apps import flows
from tests.acceptance.harness import Harness, step_completions

pytestmark = pytest.mark.acceptance


async def test_resume_a_run_held_by_a_killed_worker(harness: Harness) -> None:
    run_id = "resume-1"
    async with harness.client() as client:
        w1 = harness.worker()
        await client.start(flows.five_steps, 4, "s3", run_id=run_id)
        await harness.wait_for(
            lambda: harness.started()[(run_id, "acc.s3")], "step 3 to start", alive=(w1,)
        )
        w1.kill()
        held = await client.get(run_id)
        assert held.state is keel.RunState.RUNNING  # its lease has not expired (TTL 30 s)

        # Not forced: the dead worker's liveness lock is gone, so the run is stuck.
        resumed = await client.resume(run_id)
        assert resumed.state is keel.RunState.SUSPENDED and resumed.lease_owner is None
        assert step_completions(await client.history(run_id)) == Counter({"acc.s1": 1, "acc.s2": 1})

        harness.open_gate("s3")
        w2 = harness.worker()
        infos = await harness.wait_finished(client, [run_id], alive=(w2,))
        assert infos[run_id].state == "completed", infos[run_id].error
        assert await client.result(run_id) == flows.five_steps_expected(4)
    runs = harness.started()
    assert runs[(run_id, "acc.s1")] == 1 and runs[(run_id, "acc.s2")] == 1


async def test_terminate_from_the_command_line_stops_a_live_worker(harness: Harness) -> None:
    run_id = "terminate-1"
    async with harness.client() as client:
        w1 = harness.worker()
        await client.start(flows.five_steps, 4, "s3", run_id=run_id)
        await harness.wait_for(
            lambda: harness.started()[(run_id, "acc.s3")], "step 3 to start", alive=(w1,)
        )
        out = harness.cli_ok(
            "runs", "terminate", run_id, "--reason", "operator test", "--db", harness.db_url
        )
        assert out.strip() == f"run {run_id} terminated"
        before = [e.type for e in await client.history(run_id)]
        harness.open_gate("s3")  # the step returns; the worker's write is refused
        await harness.wait_for(
            lambda: "lease lost" in harness.worker_output(), "the worker to lose the run"
        )
        after = await client.history(run_id)
        assert [e.type for e in after] == before and before[-1] == "run_terminated"
        assert (await client.get(run_id)).state is keel.RunState.TERMINATED
        assert w1.alive()  # the worker carries on
