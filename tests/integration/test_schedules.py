"""Schedules with real workers: cron and one-shot ticks start runs, each exactly once.

Real-clock tests use per-second cron expressions (seconds first) and wait on a
condition with a deadline. Tests of missed ticks, catch-up windows and
overlap skip time instead (the test kit's ``keel_env`` on memory and SQLite):
each jump of the clock returns once the worker has handled what fell due.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import keel
from keel.core.cron import tick_run_id
from keel.store import MemoryStore, Store
from keel.store.base import NewSchedule
from keel.testing import TestEnv

calls: list[str] = []


@keel.workflow(name="sched_echo")
async def echo(label: str) -> str:
    calls.append(label)
    return f"hello {label}"


@keel.workflow(name="sched_gate")
async def gate(label: str) -> str:
    await keel.wait_for_signal("open")
    return label


async def until(cond: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def runs_of(client: keel.Client, workflow: str = "sched_echo") -> list[keel.RunInfo]:
    return (await client.list(workflow=workflow, limit=1000)).runs


# --- real clock, every backend -----------------------------------------------------------


async def test_a_per_second_cron_schedule_starts_a_run_each_tick(env: Any) -> None:
    async with env() as (client, worker):
        info = await client.schedule(echo, "tick", cron="* * * * * *", schedule_id="every-second")
        assert (info.state, info.cron, info.timezone) == ("active", "* * * * * *", "UTC")
        assert info.next_fire_at is not None and info.next_fire_at.microsecond == 0

        async def two_done() -> bool:
            runs = await runs_of(client)
            return sum(r.state is keel.RunState.COMPLETED for r in runs) >= 2

        await until(two_done)
        runs = sorted(r.run_id for r in await runs_of(client))
        assert all(r.startswith("every-second@") and r.endswith("Z") for r in runs)
        ticks = [datetime.fromisoformat(r.split("@", 1)[1]) for r in runs]
        assert ticks == sorted(set(ticks))  # distinct ticks, on whole seconds
        assert all(t.microsecond == 0 for t in ticks)
        assert await client.result(runs[0], timeout=10) == "hello tick"
        history = await client.history(runs[0])
        assert history[0].data["schedule"] == "every-second"
        assert history[0].data["scheduled_at"] == ticks[0].timestamp()
        assert worker.schedules is not None and worker.schedules.fired >= 2
        await client.delete_schedule("every-second")
        assert await client.list_schedules() == []


async def test_a_one_shot_schedule_starts_one_run_then_is_done(env: Any) -> None:
    async with env() as (client, _):
        at = datetime.now(UTC) + timedelta(seconds=0.3)
        info = await client.schedule(echo, "once", at=at, schedule_id="once")
        assert (info.state, info.cron, info.at) == ("active", None, at)
        run_id = tick_run_id("once", at.timestamp())
        await until(lambda: _exists(client, run_id))
        assert await client.result(run_id, timeout=10) == "hello once"
        done = await client.get_schedule("once")
        assert (done.state, done.next_fire_at, done.last_run_id) == ("done", None, run_id)
        assert [r.run_id for r in await runs_of(client)] == [run_id]


async def test_a_one_shot_in_the_past_fires_at_once(env: Any) -> None:
    async with env() as (client, _):
        at = datetime.now(UTC) - timedelta(days=1)
        await client.schedule(echo, "late", at=at.isoformat(), schedule_id="late")
        run_id = tick_run_id("late", at.timestamp())
        await until(lambda: _exists(client, run_id))
        assert await client.result(run_id, timeout=10) == "hello late"


async def _exists(client: keel.Client, run_id: str) -> bool:
    return await client.store.reads.get_run(run_id) is not None


async def test_workers_racing_on_every_tick_start_each_once(
    make_store: Callable[[], Store],
) -> None:
    async with AsyncExitStack() as stack:
        workers = [
            keel.Worker(make_store(), poll_interval=0.05, cache=False, owner=f"w{i}")
            for i in range(3)
        ]
        for w in workers:
            await stack.enter_async_context(w)
        client = workers[0].client()
        await client.schedule(echo, "race", cron="* * * * * *", schedule_id="race")

        async def three_ticks() -> bool:
            return len(await runs_of(client)) >= 3

        await until(three_ticks)
        await client.pause_schedule("race")
        runs = await runs_of(client)

        async def counted() -> bool:  # a worker counts its fire just after the commit
            return sum(w.schedules.fired for w in workers if w.schedules) >= len(runs)

        await until(counted)
        # Every fire a worker won created the run of its own tick: none was fired
        # twice (a second fire of a tick would count here but find its run id taken).
        assert sum(w.schedules.fired for w in workers if w.schedules) == len(runs)
        assert len({r.run_id for r in runs}) == len(runs)
        for run in runs:
            assert await client.result(run.run_id, timeout=10) == "hello race"


async def test_schedules_survive_a_restart(make_store: Callable[[], Store]) -> None:
    first = keel.Worker(make_store(), poll_interval=0.05, cache=False)
    async with first:
        client = first.client()
        await client.schedule(echo, "restart", cron="* * * * * *", schedule_id="restart")
        await until(lambda: _count_above(client, 0))
    # A new worker on a new store object (for SQLite and PostgreSQL: new connections
    # to the same database) carries on from the next tick; none fires twice.
    async with keel.Worker(make_store(), poll_interval=0.05, cache=False) as second:
        client = second.client()
        before = await runs_of(client)
        await until(lambda: _count_above(client, len(before)))
        await client.pause_schedule("restart")
        runs = await runs_of(client)
        one, two = first.schedules, second.schedules
        assert one is not None and two is not None

        async def counted() -> bool:  # a worker counts its fire just after the commit
            return one.fired + two.fired >= len(runs)

        await until(counted)
        assert one.fired + two.fired == len(runs)
        for run in runs:
            assert await client.result(run.run_id, timeout=10) == "hello restart"


async def test_pause_resume_and_delete(env: Any) -> None:
    async with env() as (client, _):
        await client.schedule(echo, "p", cron="* * * * * *", schedule_id="p")
        paused = await client.pause_schedule("p")
        assert paused.state == "paused"
        assert (await client.get_schedule("p")).state == "paused"
        before = len(await runs_of(client))
        resumed = await client.resume_schedule("p")
        assert resumed.state == "active" and resumed.next_fire_at is not None
        assert resumed.next_fire_at > datetime.now(UTC) - timedelta(seconds=0.5)
        await until(lambda: _count_above(client, before))
        await client.delete_schedule("p")
        with pytest.raises(keel.ScheduleNotFoundError):
            await client.get_schedule("p")
        with pytest.raises(keel.ScheduleNotFoundError):
            await client.pause_schedule("p")
        with pytest.raises(keel.ScheduleNotFoundError):
            await client.resume_schedule("p")
        with pytest.raises(keel.ScheduleNotFoundError):
            await client.delete_schedule("p")


async def _count_above(client: keel.Client, n: int) -> bool:
    return len(await runs_of(client)) > n


# --- bad input ---------------------------------------------------------------------------


async def test_bad_schedules_fail_at_the_call_and_write_nothing(env: Any) -> None:
    async with env() as (client, _):
        await client.schedule(echo, "x", cron="0 9 * * MON-FRI", schedule_id="taken")
        in_an_hour = datetime.now(UTC) + timedelta(hours=1)
        bad: list[tuple[Callable[[], Awaitable[Any]], type[Exception], str]] = [
            (lambda: client.schedule(echo, "x", cron="0 25 * * *"), keel.InvalidScheduleError,
             "invalid cron expression '0 25 \\* \\* \\*': Bad hour"),
            (lambda: client.schedule(echo, "x", cron="daily"), keel.InvalidScheduleError,
             "invalid cron expression"),
            (lambda: client.schedule(echo, "x", cron="0 9 * * *", timezone="Paris"),
             keel.InvalidScheduleError, "unknown time zone 'Paris'"),
            (lambda: client.schedule(echo, "x", at=in_an_hour, timezone="Mars/Base"),
             keel.InvalidScheduleError, "unknown time zone"),
            (lambda: client.schedule(echo, "x", at=datetime(2030, 1, 1, 9)),
             keel.InvalidScheduleError, "has no time zone"),
            (lambda: client.schedule(echo, "x", at="tomorrow at nine"),
             keel.InvalidScheduleError, "not an ISO-8601"),
            (lambda: client.schedule(echo, "x", at=1893456000), keel.InvalidScheduleError,
             "at must be a datetime"),
            (lambda: client.schedule(echo, "x"), keel.InvalidScheduleError, "exactly one of"),
            (lambda: client.schedule(echo, "x", cron="* * * * *", at=in_an_hour),
             keel.InvalidScheduleError, "exactly one of"),
            (lambda: client.schedule(echo, "x", cron="* * * * *", overlap="queue"),
             keel.InvalidScheduleError, "overlap must be one of"),
            (lambda: client.schedule(echo, "x", cron="* * * * *", catchup_window=-1),
             keel.InvalidScheduleError, "catchup_window"),
            (lambda: client.schedule(echo, "x", cron="* * * * *", schedule_id=""),
             keel.InvalidScheduleError, "schedule_id"),
            (lambda: client.schedule(echo, "x", cron="* * * * *", schedule_id="s" * 151),
             keel.InvalidScheduleError, "schedule_id"),
            (lambda: client.schedule("no_such_workflow", cron="* * * * *"),
             keel.WorkflowNotFoundError, "no_such_workflow"),
            (lambda: client.schedule(echo, object(), cron="* * * * *"), keel.SerializationError,
             "label"),
            (lambda: client.schedule(echo, cron="* * * * *"), TypeError, "bad arguments"),
            (lambda: client.schedule(echo, "x", cron="* * * * *", schedule_id="taken"),
             keel.ScheduleExistsError, "'taken' exists already"),
        ]  # fmt: skip
        for call, error, message in bad:
            with pytest.raises(error, match=message):
                await call()
        assert [s.schedule_id for s in await client.list_schedules()] == ["taken"]
        invalid = keel.InvalidScheduleError("cron", "x")
        assert isinstance(invalid, keel.ConfigurationError) and isinstance(invalid, ValueError)


# --- skipped time (memory and SQLite) ------------------------------------------------------
# The test kit's environment (keel_env, a worker and client on a test clock) jumps
# the clock and waits until the worker has handled everything due: no polling.

T0 = datetime(2030, 1, 1, 0, 0, 30, tzinfo=UTC)
SKIPPED = [
    pytest.mark.parametrize("keel_backend", ["memory", "sqlite"]),
    pytest.mark.keel(start=T0, auto_advance=False),
]


def _at(hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(2030, 1, 1, hour, minute, second, tzinfo=UTC)


async def _tick_runs(env: TestEnv, workflow: str = "sched_echo") -> list[str]:
    return sorted(r.run_id for r in await runs_of(env.client, workflow))


@SKIPPED[0]
@SKIPPED[1]
async def test_after_downtime_only_the_latest_missed_tick_runs(keel_env: TestEnv) -> None:
    client = keel_env.client
    info = await client.schedule(echo, "m", cron="* * * * *", schedule_id="m")
    assert info.next_fire_at == _at(0, 1)
    await keel_env.advance_to(_at(0, 5, 30))  # ticks 00:01 ... 00:05 were missed
    expected = tick_run_id("m", _at(0, 5).timestamp())
    schedule = await client.get_schedule("m")
    assert (schedule.next_fire_at, schedule.last_fire_at) == (_at(0, 6), _at(0, 5))
    assert await _tick_runs(keel_env) == [expected]
    assert await client.result(expected, timeout=10) == "hello m"


@SKIPPED[0]
@SKIPPED[1]
async def test_a_tick_older_than_the_catchup_window_is_skipped(keel_env: TestEnv) -> None:
    client = keel_env.client
    await client.schedule(echo, "c", cron="0 * * * *", schedule_id="c", catchup_window=600)
    await keel_env.advance_to(_at(3, 30))  # the 03:00 tick is 30 minutes late
    assert (await client.get_schedule("c")).next_fire_at == _at(4, 0)
    assert await _tick_runs(keel_env) == []
    await keel_env.advance_to(_at(4, 5))  # five minutes late: within the window
    assert await _tick_runs(keel_env) == [tick_run_id("c", _at(4, 0).timestamp())]


@SKIPPED[0]
@SKIPPED[1]
async def test_overlap_skip_starts_no_run_while_the_last_one_runs(keel_env: TestEnv) -> None:
    client = keel_env.client
    await client.schedule(gate, "g", cron="* * * * *", schedule_id="g", overlap="skip")
    first = tick_run_id("g", _at(0, 1).timestamp())
    await keel_env.advance_to(_at(0, 1))
    assert await _tick_runs(keel_env, "sched_gate") == [first]
    await keel_env.advance_to(_at(0, 2))
    assert (await client.get_schedule("g")).next_fire_at == _at(0, 3)  # 00:02 skipped
    assert await _tick_runs(keel_env, "sched_gate") == [first]
    await client.signal(first, "open")
    assert await client.result(first, timeout=10) == "g"
    await keel_env.advance_to(_at(0, 3))
    assert tick_run_id("g", _at(0, 3).timestamp()) in await _tick_runs(keel_env, "sched_gate")


@SKIPPED[0]
@SKIPPED[1]
async def test_resume_skips_the_ticks_missed_while_paused(keel_env: TestEnv) -> None:
    client = keel_env.client
    await client.schedule(echo, "r", cron="*/10 * * * *", schedule_id="r")
    await client.pause_schedule("r")
    await keel_env.sleep(minutes=64, seconds=30)  # six ticks pass while paused: 01:05
    assert await _tick_runs(keel_env) == []
    resumed = await client.resume_schedule("r")
    assert resumed.next_fire_at == _at(1, 10)
    await keel_env.advance_to(_at(1, 10, 1))
    assert await _tick_runs(keel_env) == [tick_run_id("r", _at(1, 10).timestamp())]


@SKIPPED[0]
@SKIPPED[1]
async def test_a_schedule_in_a_time_zone_fires_at_local_time(keel_env: TestEnv) -> None:
    client = keel_env.client
    info = await client.schedule(
        echo, "tz", cron="0 9 * * MON-FRI", timezone="Europe/Paris", schedule_id="tz"
    )
    # 2030-01-01 is a Tuesday; 09:00 in Paris is 08:00 UTC in winter.
    assert info.next_fire_at == _at(8, 0)
    await keel_env.advance_to(_at(8, 0))
    assert await _tick_runs(keel_env) == ["tz@2030-01-01T08:00:00Z"]
    assert (await client.get_schedule("tz")).next_fire_at == datetime(2030, 1, 2, 8, tzinfo=UTC)


async def test_a_schedule_that_cannot_be_fired_does_not_hold_up_the_others() -> None:
    store = MemoryStore()
    await store.open()
    now = await store.now()
    # Written behind the client's back: a cron expression the worker cannot evaluate.
    broken = NewSchedule(
        "broken", "sched_echo", b'{"label":"b"}', "not a cron", None, "UTC", now - 2
    )
    await store.schedules.create(broken)
    async with keel.Worker(store, poll_interval=0.05, cache=False) as worker:
        client = worker.client()
        at = datetime.fromtimestamp(now - 1, UTC)
        await client.schedule(echo, "fine", at=at, schedule_id="fine")
        run_id = tick_run_id("fine", now - 1)
        await until(lambda: _exists(client, run_id))
        assert await client.result(run_id, timeout=10) == "hello fine"
        assert (await client.get_schedule("broken")).next_fire_at == at - timedelta(seconds=1)
