"""Skipped time: the test kit's clock drives timers, retries, signal timeouts,
schedules and lease expiry, on the memory store and on real SQLite files.

These tests use Keel's own pytest plugin (its ``pytest11`` entry point), as a
user's suite would: ``keel_env`` is a started worker and client on a
:class:`keel.testing.TestClock`, and ``keel_backend`` is parametrised directly.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

import keel
from keel.core.cron import tick_run_id
from keel.store.memory import MemoryStore
from keel.store.ports import Store
from keel.testing import TestClock, TestEnv

BOTH = pytest.mark.parametrize("keel_backend", ["memory", "sqlite"])

attempt_times: list[float] = []
CLOCK: list[TestClock] = []  # the clock of the running test, for steps to read


@keel.workflow(name="kit_nap")
async def nap(seconds: float) -> float:
    started = keel.now()
    await keel.sleep(seconds)
    return (keel.now() - started).total_seconds()


@keel.step(
    name="kit_flaky",
    retry=keel.RetryPolicy(max_attempts=3, initial_interval=600, max_interval=600, jitter=0),
)
async def flaky() -> str:
    attempt_times.append(CLOCK[-1].now())
    if len(attempt_times) == 1:
        raise RuntimeError("the first attempt fails")
    return "ok"


@keel.workflow(name="kit_retrying")
async def retrying() -> str:
    return await flaky.aio()


@keel.workflow(name="kit_approval")
async def approval() -> str:
    started = keel.now()
    try:
        await keel.wait_for_signal("approve", timeout=timedelta(days=1))
    except keel.SignalTimeoutError:
        return f"timed out after {(keel.now() - started).total_seconds():g}s"
    return "approved"


@keel.workflow(name="kit_nightly")
async def nightly(label: str) -> str:
    return f"{label} at {keel.now().isoformat()}"


@keel.step(name="kit_once")
async def once() -> str:
    attempt_times.append(CLOCK[-1].now())
    return "done"


@keel.workflow(name="kit_after_lease")
async def after_lease() -> str:
    return await once.aio()


@pytest.fixture(autouse=True)
def _clock(keel_clock: TestClock | None) -> None:
    attempt_times.clear()
    CLOCK[:] = [keel_clock] if keel_clock is not None else []


async def _state(env: TestEnv, run_id: str) -> keel.RunState:
    return (await env.client.get(run_id)).state


@BOTH
@pytest.mark.keel(auto_advance=False)
async def test_a_workflow_sleeping_an_hour_finishes_after_advance_and_not_before(
    keel_env: TestEnv,
) -> None:
    run = await keel_env.client.start(nap, 3600.0)
    await keel_env.advance(minutes=59, seconds=59)
    assert await _state(keel_env, run.run_id) is keel.RunState.SUSPENDED
    info = await keel_env.client.get(run.run_id)
    assert info.waiting is None  # the worker's versions stay live across the jump
    await keel_env.advance(seconds=1)
    assert await _state(keel_env, run.run_id) is keel.RunState.COMPLETED
    assert await run.result(timeout=10) == 3600.0


@BOTH
@pytest.mark.keel(auto_advance=False)
async def test_retry_backoff_of_ten_minutes_is_skipped(keel_env: TestEnv) -> None:
    start = keel_env.clock.now() if keel_env.clock else 0.0
    run = await keel_env.client.start(retrying)
    await keel_env.sleep(minutes=9, seconds=59)
    assert attempt_times == [start]  # the retry is not due yet
    assert await _state(keel_env, run.run_id) is keel.RunState.SUSPENDED
    await keel_env.sleep(seconds=1)
    assert await run.result(timeout=10) == "ok"
    assert attempt_times == [start, start + 600]  # the second attempt ran at its due time


@BOTH
async def test_a_signal_timeout_of_a_day_fires(keel_env: TestEnv) -> None:
    run = await keel_env.client.start(approval)
    # Auto-advance: while the test waits for the result, the clock jumps to the timeout.
    assert await run.result(timeout=10) == "timed out after 86400s"


@BOTH
async def test_auto_advance_finishes_a_run_sleeping_a_week(keel_env: TestEnv) -> None:
    start = keel_env.now()
    run = await keel_env.client.start(nap, 7 * 86400.0)
    assert await run.result(timeout=10) == 7 * 86400.0
    assert keel_env.now() - start == timedelta(days=7)  # no further than needed


@BOTH
@pytest.mark.keel(auto_advance=False)
async def test_a_signal_sent_after_the_start_is_not_raced_by_the_clock(
    keel_env: TestEnv,
) -> None:
    run = await keel_env.client.start(approval)
    await keel_env.settle()  # the run waits for the signal, its timeout a day away
    await keel_env.client.signal(run.run_id, "approve")
    assert await run.result(timeout=10) == "approved"


@BOTH
async def test_a_nightly_cron_schedule_over_a_simulated_week(keel_env: TestEnv) -> None:
    first = datetime(2030, 1, 7, tzinfo=UTC)  # the test clock's start, a Monday
    assert keel_env.now() == first
    await keel_env.client.schedule(nightly, "backup", cron="0 2 * * *", schedule_id="nightly")
    wall = time.perf_counter()
    await keel_env.sleep(days=7)
    print(f"a week of a nightly schedule took {time.perf_counter() - wall:.3f}s of wall time")
    ticks = [first + timedelta(days=d, hours=2) for d in range(7)]
    runs = (await keel_env.client.list(workflow="kit_nightly", limit=100)).runs
    assert sorted(r.run_id for r in runs) == [tick_run_id("nightly", t.timestamp()) for t in ticks]
    for tick in ticks:
        run_id = tick_run_id("nightly", tick.timestamp())
        assert await keel_env.client.result(run_id, timeout=10) == f"backup at {tick.isoformat()}"
    schedule = await keel_env.client.get_schedule("nightly")
    assert schedule.last_fire_at == ticks[-1]
    assert schedule.next_fire_at == ticks[-1] + timedelta(days=1)


@BOTH
async def test_lease_expiry_lets_a_live_worker_take_over_a_dead_workers_run(
    keel_store: Store, keel_clock: TestClock
) -> None:
    # A worker that claimed the run and died: its lease (30 s TTL) is all that is left.
    run = await keel.Client(keel_store).start(after_lease)
    [held] = await keel_store.runs.claim("dead-worker", limit=1, ttl=30.0)
    assert held.run.run_id == run.run_id
    async with TestEnv(keel_store, clock=keel_clock, auto_advance=False) as env:
        await env.sleep(29)
        info = await env.client.get(run.run_id)
        assert info.state is keel.RunState.RUNNING and attempt_times == []
        await env.sleep(2)  # the lease has expired: the live worker claims the run
        assert await env.client.result(run.run_id, timeout=10) == "done"
        assert attempt_times == [held.lease.expires_at + 0.001]


@pytest.mark.parametrize("keel_backend", ["memory"])
@pytest.mark.keel(auto_advance=False)
async def test_time_moves_forward_only(keel_env: TestEnv) -> None:
    with pytest.raises(keel.ConfigurationError, match="forward only"):
        await keel_env.advance(seconds=-1)
    assert keel_env.clock is not None
    with pytest.raises(keel.ConfigurationError, match="forward only"):
        await keel_env.advance_to(keel_env.clock.now() - 1)


@BOTH
async def test_a_second_worker_shares_the_database_and_the_clock(keel_env: TestEnv) -> None:
    second = await keel_env.start_worker()
    assert second.clock is keel_env.clock and second.store is not None
    runs = [await keel.Client(second.store).start(nap, 3600.0 * n) for n in range(1, 5)]
    for n, run in enumerate(runs, start=1):
        assert await keel_env.client.result(run.run_id, timeout=10) == 3600.0 * n


@keel.step(
    name="kit_dispatched",
    queue="kit-q",
    retry=keel.RetryPolicy(max_attempts=3, initial_interval=600, max_interval=600, jitter=0),
)
async def dispatched() -> str:
    attempt_times.append(CLOCK[-1].now())
    if len(attempt_times) == 1:
        raise RuntimeError("the first attempt fails")
    return "ok"


@keel.workflow(name="kit_dispatching")
async def dispatching() -> str:
    return await dispatched.aio()


@BOTH
@pytest.mark.keel(queues=["kit-q"], auto_advance=False)
async def test_a_dispatched_steps_retry_backoff_is_skipped(keel_env: TestEnv) -> None:
    start = keel_env.clock.now() if keel_env.clock else 0.0
    run = await keel_env.client.start(dispatching)
    await keel_env.sleep(minutes=9)
    assert attempt_times == [start]  # settled: the first attempt ran and failed
    await keel_env.sleep(minutes=1)
    assert await run.result(timeout=10) == "ok"
    assert attempt_times == [start, start + 600]


async def test_a_worker_waits_for_timers_in_process_on_its_clock() -> None:
    # Worker(clock=...) without the environment: a timer within inline_wait waits
    # in the worker, on the test clock, not on the wall clock.
    clock = TestClock()
    async with keel.Worker(MemoryStore(clock=clock.now), clock=clock, inline_wait=5.0) as worker:
        run = await worker.client().start(nap, 0.5)
        with pytest.raises(keel.ResultTimeoutError):
            await run.result(timeout=1.0)  # a second of real time: the timer has not fired
        assert (await run.info()).state is keel.RunState.RUNNING  # waiting in the worker
        clock.advance(0.5)
        assert await run.result(timeout=10) == 0.5


@keel.workflow(name="kit_chain")
async def chain(minutes: int) -> list[float]:
    """Sleeps, a signal timeout and a child, each woken at its own time."""
    started = keel.now()
    woke: list[float] = []
    for _ in range(3):
        await keel.sleep(timedelta(minutes=minutes))
        woke.append((keel.now() - started).total_seconds())
    try:
        await keel.wait_for_signal("never", timeout=timedelta(minutes=minutes))
    except keel.SignalTimeoutError:
        woke.append((keel.now() - started).total_seconds())
    await keel.run_child(nap, 60.0 * minutes)
    woke.append((keel.now() - started).total_seconds())
    return woke


@BOTH
@pytest.mark.keel(auto_advance=False)
async def test_sleep_wakes_every_run_at_its_own_time(keel_env: TestEnv) -> None:
    runs = {m: await keel_env.client.start(chain, m) for m in (7, 11, 13, 60)}
    await keel_env.sleep(hours=5)
    for m, run in runs.items():
        assert await run.result(timeout=10) == [60.0 * m * k for k in (1, 2, 3, 4, 5)]


@BOTH
async def test_auto_advance_while_several_results_are_awaited(keel_env: TestEnv) -> None:
    runs = [await keel_env.client.start(chain, m) for m in (5, 17)]
    results = await asyncio.gather(*(run.result(timeout=10) for run in runs))
    assert results == [[60.0 * m * k for k in (1, 2, 3, 4, 5)] for m in (5, 17)]
    assert keel_env.now() == datetime(2030, 1, 7, tzinfo=UTC) + timedelta(minutes=17 * 5)


@BOTH
async def test_env_mock_step_fakes_a_step_and_its_retries_take_no_time(keel_env: TestEnv) -> None:
    with keel_env.mock_step(flaky, raises=RuntimeError("down")) as fake:
        run = await keel_env.client.start(retrying)
        with pytest.raises(keel.RunFailedError, match="down"):
            await run.result(timeout=10)  # two 10-minute backoffs, skipped
    assert fake.call_count == 3 and attempt_times == []  # the real body never ran
    assert keel_env.now() == datetime(2030, 1, 7, 0, 20, tzinfo=UTC)
    with keel_env.mock_step(flaky, returns="faked"):
        assert await (await keel_env.client.start(retrying)).result(timeout=10) == "faked"
