"""Operator actions end to end, on every backend: recovering from a bug by retry,
from a nondeterminism failure by fork, terminate and resume with a worker, bulk
actions over a filter, and pruning that never touches a live family."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import keel
from keel.workflow.registry import Registry
from tests.integration._support import calls, note, reset, wait_state, wait_until


@pytest.fixture(autouse=True)
def _reset() -> None:
    reset()
    bug["fixed"] = False


bug = {"fixed": False}


@keel.step(name="ops.reserve")
def reserve(order: str) -> str:
    note("reserve")
    return f"reserved {order}"


@keel.step(name="ops.charge", retry=keel.RetryPolicy(max_attempts=2, initial_interval=0.01))
def charge(order: str) -> str:
    note("charge")
    if not bug["fixed"]:
        raise ValueError("charge: off by one")
    return f"charged {order}"


@keel.step(name="ops.ship")
def ship(order: str) -> str:
    note("ship")
    return f"shipped {order}"


@keel.workflow(name="ops.order")
async def order_flow(order: str) -> list[str]:
    return [await reserve.aio(order), await charge.aio(order), await ship.aio(order)]


async def test_a_fixed_step_is_retried_reusing_the_completed_steps(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(order_flow, "o-1", run_id="order-o-1")
        with pytest.raises(keel.RunFailedError, match="off by one"):
            await run.result(timeout=20)
        assert calls == {"reserve": 1, "charge": 2}
        before = await client.history(run.run_id)

        bug["fixed"] = True  # the fix is deployed
        retried = await client.retry(run.run_id)
        assert await retried.result(timeout=20) == [
            "reserved o-1",
            "charged o-1",
            "shipped o-1",
        ]
        # reserve was not run again; charge ran once more, from its first attempt.
        assert calls == {"reserve": 1, "charge": 3, "ship": 1}
        new = await client.get(retried.run_id)
        failure = [e.seq for e in before if e.type == "step_failed"]
        assert (new.forked_from, [new.fork_seq]) == (run.run_id, failure)
        original = await client.get(run.run_id)
        assert original.state is keel.RunState.FAILED and original.forks == (retried.run_id,)
        assert await client.history(run.run_id) == before  # never changed
        events = await client.history(retried.run_id)
        assert events[0].data["forked_from"] == run.run_id
        assert [(e.type, e.command) for e in events[1:2]] == [
            ("step_completed", "step:ops.reserve#0")
        ]
        completed = [e for e in events if e.type == "step_completed"]
        assert completed[1].data["attempt"] == 1  # the failed attempts were not copied


# -- a nondeterminism failure, recovered by forking before the diverging command -------

old_code, new_code = Registry(), Registry()


@keel.step(name="ops.a", registry=old_code)
def step_a_old() -> str:
    note("a")
    return "a"


@keel.step(name="ops.b", registry=old_code)
def step_b() -> str:
    note("b")
    return "b"


@keel.workflow(name="ops.deploy", version="1", registry=old_code)
async def deploy_v1() -> str:
    first = await step_a_old.aio()
    second = await step_b.aio()
    go = await keel.wait_for_signal("go", type=str)
    return f"{first}{second}{go}"


@keel.step(name="ops.a", registry=new_code)
def step_a_new() -> str:
    note("a")
    return "a"


@keel.step(name="ops.c", registry=new_code)
def step_c() -> str:
    note("c")
    return "c"


@keel.workflow(name="ops.deploy", version="1", registry=new_code)
async def deploy_v1_edited() -> str:  # edited in place, version kept: breaks replay
    first = await step_a_new.aio()
    second = await step_c.aio()
    go = await keel.wait_for_signal("go", type=str)
    return f"{first}{second}{go}"


@pytest.mark.parametrize("how", ["retry", "fork"])
async def test_a_nondeterminism_failure_is_recovered_by_forking(
    make_store: Callable[[], Any], how: str
) -> None:
    async with keel.Worker(make_store(), registry=old_code, poll_interval=0.05) as old:
        client = old.client()
        run = await client.start("ops.deploy", run_id=f"deploy-{how}")
        await wait_until(lambda: calls["b"] == 1, "the old code to run step b")
        await wait_state(client, run.run_id, keel.RunState.SUSPENDED)
    assert calls == {"a": 1, "b": 1}

    options: dict[str, Any] = {"registry": new_code, "poll_interval": 0.05, "cache": False}
    async with keel.Worker(make_store(), **options) as new:
        client = new.client()
        await client.signal(run.run_id, "go", "!")
        with pytest.raises(keel.RunFailedError) as failed:
            await client.result(run.run_id, timeout=20)
        assert failed.value.error_type == "keel.errors.NondeterminismError"
        if how == "retry":
            recovered = await client.retry(run.run_id)
        else:
            recovered = await client.fork(run.run_id, "step:ops.b#0")
        assert await recovered.result(timeout=20) == "ac!"  # the signal was sent again
        assert calls == {"a": 1, "b": 1, "c": 1}  # step a was reused, not run again
        info = await client.get(recovered.run_id)
        assert info.fork_seq == 2 and info.forked_from == run.run_id

    # The forked journal replays under the current code (what `keel replay` checks).
    from keel.replay import check_runs

    async with keel.Client(make_store(), registry=new_code) as reader:
        report = await check_runs(reader, new_code, workflow="ops.deploy")
    verdicts = {v.run_id: v.status for v in report.results}
    assert verdicts[recovered.run_id] == "ok"


# -- terminate and resume with a worker --------------------------------------------------


@keel.step(name="ops.wait_forever")
async def wait_forever() -> None:
    note("waiting")
    await asyncio.Event().wait()


@keel.workflow(name="ops.stuck")
async def stuck_flow() -> None:
    try:
        await wait_forever.aio()
    except keel.WorkflowCancelled:
        note("cleanup")  # a cancel's cleanup: a terminate never runs it
        raise


async def test_terminate_ends_a_stuck_run_without_cleanup(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(stuck_flow, run_id="stuck-1")
        await wait_until(lambda: calls["waiting"] == 1, "the step to start")
        info = await client.terminate(run.run_id, reason="hung")
        assert info.state is keel.RunState.TERMINATED
        with pytest.raises(keel.RunTerminatedError):
            await client.result(run.run_id, timeout=5)
        history = await client.history(run.run_id)
        assert history[-1].type == "run_terminated" and history[-1].data["reason"] == "hung"
        with pytest.raises(keel.RunFinishedError):
            await client.terminate(run.run_id)
        # `keel replay` checks a terminated run's journal up to its end.
        from keel.replay import check_runs

        report = await check_runs(client, workflow="ops.stuck")
        assert [(v.status, v.outcome) for v in report.results] == [("ok", "terminated")]
    assert calls["cleanup"] == 0


async def test_resume_takes_a_stuck_run_and_a_worker_replays_it(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(stuck_flow, run_id="stuck-2")
        await wait_until(lambda: calls["waiting"] == 1, "the step to start")
        with pytest.raises(keel.RunNotStuckError):
            await client.resume(run.run_id)  # its worker renews the lease and wrote lately
        await client.resume(run.run_id, force=True)
        # Taken from the holder: the step (at-least-once) starts again on a new lease.
        await wait_until(lambda: calls["waiting"] == 2, "the step to run again")
        info = await client.get(run.run_id)
        assert info.state is keel.RunState.RUNNING
        await client.terminate(run.run_id)


# -- bulk and prune ------------------------------------------------------------------------


@keel.workflow(name="ops.sleeper")
async def sleeper(n: int) -> int:
    await keel.sleep(3600)
    return n


async def test_resume_can_fire_a_far_timer_now(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(sleeper, 7, run_id="far-timer")
        await wait_state(client, run.run_id, keel.RunState.SUSPENDED)
        await client.resume(run.run_id)  # due now, but the sleep still has an hour to go

        async def asleep_again() -> bool:
            info = await client.get(run.run_id)
            later = datetime.now(UTC) + timedelta(minutes=30)
            return info.state is keel.RunState.SUSPENDED and (info.wake_at or later) > later

        await wait_until(asleep_again, "the replayed run to sleep until its timer again")
        await client.resume(run.run_id, fire_timers=True)
        assert await run.result(timeout=20) == 7
        types = [e.type for e in await client.history(run.run_id)]
        assert types.count("timer_fired") == 1 and types[-1] == "run_completed"


async def test_bulk_retry_writes_each_page_of_new_runs_at_once(env: Any) -> None:
    async with env() as (client, _):
        runs = [await client.start(sleeper, n, run_id=f"again-{n}") for n in range(3)]
        for r in runs:
            await wait_state(client, r.run_id, keel.RunState.SUSPENDED)
        await client.bulk("terminate", [r.run_id for r in runs])
        live = await client.start(sleeper, 9, run_id="again-live")
        done = await client.bulk("retry", workflow="ops.sleeper")
        assert (done.done, done.refused) == (3, 1)  # the live run is not retried
        assert done.refusals[0][0] == live.run_id
        forked = {(await client.get(new)).forked_from for new in done.new_runs}
        assert forked == {r.run_id for r in runs}
        for new in done.new_runs:  # each new run picks up from the copy and sleeps
            await wait_state(client, new, keel.RunState.SUSPENDED)


async def test_bulk_terminate_by_filter_and_prune(env: Any) -> None:
    async with env() as (client, _):
        runs = [await client.start(sleeper, n, run_id=f"sleeper-{n}") for n in range(5)]
        for r in runs:
            await wait_state(client, r.run_id, keel.RunState.SUSPENDED)
        assert await client.count(workflow="ops.sleeper", state="suspended") == 5
        done = await client.bulk("terminate", workflow="ops.sleeper", state="suspended")
        assert (done.done, done.refused) == (5, 0)
        again = await client.bulk("terminate", [r.run_id for r in runs[:2]])
        assert (again.done, again.refused) == (0, 2)
        assert "already terminated" in again.refusals[0][1]
        with pytest.raises(keel.ConfigurationError, match="not both"):
            await client.bulk("resume", ["sleeper-0"], workflow="ops.sleeper")
        with pytest.raises(keel.ConfigurationError, match="unknown bulk action"):
            await client.bulk("delete", ["sleeper-0"])  # type: ignore[arg-type]
        assert await client.prune(timedelta(hours=1)) == 0  # ended just now
        assert await client.prune(0, state="failed") == 0
        assert await client.prune(0, dry_run=True) == 5
        assert await client.prune(0, batch=2) == 5
        assert await client.count(workflow="ops.sleeper") == 0
        with pytest.raises(keel.RunNotFoundError):
            await client.history(runs[0].run_id)


@keel.workflow(name="ops.kid")
async def kid() -> str:
    await keel.wait_for_signal("done")
    return "kid"


@keel.workflow(name="ops.parent")
async def parent_flow() -> str:
    await keel.start_child(kid, child_id="ops-kid", parent_close="abandon")
    return "parent"


@keel.workflow(name="ops.waits_for_kid")
async def waits_for_kid() -> str:
    try:
        return await keel.run_child(kid, child_id="ops-waited-kid")
    except keel.ChildWorkflowError as exc:
        return f"{exc.error_type}: {exc.message}"


async def test_a_terminated_child_fails_in_its_parent(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(waits_for_kid, run_id="ops-waiter")

        async def kid_waits() -> bool:
            found = await client.list(parent_run_id="ops-waiter")
            return [r.state for r in found.runs] == [keel.RunState.SUSPENDED]

        await wait_until(kid_waits, "the child to wait for its signal")
        await client.terminate("ops-waited-kid")
        outcome = await run.result(timeout=20)
        assert outcome.startswith("keel.errors.RunTerminatedError: child run 'ops-waited-kid'")


async def test_prune_keeps_a_family_with_a_running_child(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(parent_flow, run_id="ops-parent")
        assert await run.result(timeout=20) == "parent"
        await wait_state(client, "ops-kid", keel.RunState.SUSPENDED)  # it exists: started
        assert await client.prune(0) == 0  # the child runs on: neither goes
        assert (await client.get("ops-parent")).state is keel.RunState.COMPLETED
        await client.signal("ops-kid", "done")
        assert await client.result("ops-kid", timeout=20) == "kid"
        assert await client.prune(0) == 2


async def test_a_worker_with_retention_prunes_and_keeps_live_families(env: Any) -> None:
    bug["fixed"] = True
    async with env(retention=0.2, prune_every=0.05) as (client, _):
        quick = await client.start(order_flow, "o-2", run_id="quick")
        await quick.result(timeout=20)
        family = await client.start(parent_flow, run_id="ops-parent")
        assert await family.result(timeout=20) == "parent"

        async def gone(run_id: str) -> bool:
            try:
                await client.get(run_id)
            except keel.RunNotFoundError:
                return True
            return False

        await wait_until(lambda: gone("quick"), "the worker to prune the ended run")
        # The parent ended long enough ago, but its child lives: both are kept.
        assert (await client.get("ops-parent")).state is keel.RunState.COMPLETED
        assert (await client.get("ops-kid")).state is keel.RunState.SUSPENDED
        await client.signal("ops-kid", "done")
        await wait_until(lambda: gone("ops-parent"), "the family to be pruned once it ended")
        await wait_until(lambda: gone("ops-kid"), "the child to be pruned")


def test_retention_is_checked(make_store: Callable[[], Any]) -> None:
    with pytest.raises(keel.ConfigurationError, match="retention"):
        keel.Worker(make_store(), retention=0)
    with pytest.raises(keel.ConfigurationError, match="prune_every"):
        keel.Worker(make_store(), retention=timedelta(days=30), prune_every=float("nan"))
