"""keel.testing.TestClock and the argument checks of TestEnv and Worker(clock=...)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

import keel
from keel.store.memory import MemoryStore
from keel.store.postgres import PostgresStore
from keel.testing import TestClock, TestEnv
from keel.testing.clock import DEFAULT_START
from keel.worker.clock import SYSTEM_CLOCK, Clock


def test_it_starts_at_a_fixed_moment_and_moves_only_when_told() -> None:
    clock = TestClock()
    assert clock.datetime_now() == DEFAULT_START
    clock.advance(timedelta(minutes=1), hours=1, days=1)
    assert clock.datetime_now() == DEFAULT_START + timedelta(days=1, hours=1, minutes=1)
    clock.advance_to(datetime(2031, 1, 1, tzinfo=UTC))
    assert clock.now() == datetime(2031, 1, 1, tzinfo=UTC).timestamp()
    assert isinstance(clock, Clock) and isinstance(SYSTEM_CLOCK, Clock)


def test_time_moves_forward_only() -> None:
    clock = TestClock(100.0)
    with pytest.raises(keel.ConfigurationError, match="forward only"):
        clock.advance(-1)
    with pytest.raises(keel.ConfigurationError, match="forward only"):
        clock.advance_to(99.0)
    with pytest.raises(keel.ConfigurationError, match="aware"):
        TestClock(datetime(2030, 1, 1))
    assert clock.now() == 100.0


async def test_a_sleep_ends_when_the_clock_passes_its_deadline_and_not_before() -> None:
    clock = TestClock(0.0)
    jumps: list[float] = []
    unwatch = clock.watch(lambda: jumps.append(clock.now()))
    sleeper = asyncio.ensure_future(clock.sleep(3600))
    await asyncio.sleep(0)
    assert clock.next_deadline() == 3600.0
    clock.advance(3599)
    await asyncio.sleep(0)
    assert not sleeper.done()
    clock.advance(1)
    await asyncio.wait_for(sleeper, 1)
    assert clock.next_deadline() is None
    unwatch()
    clock.advance(1)
    assert jumps == [3599.0, 3600.0]
    await clock.sleep(0)  # no wait at all


async def test_a_cancelled_sleep_leaves_no_deadline() -> None:
    clock = TestClock(0.0)
    sleeper = asyncio.ensure_future(clock.sleep(10))
    await asyncio.sleep(0)
    sleeper.cancel()
    await asyncio.gather(sleeper, return_exceptions=True)
    assert clock.next_deadline() is None


def test_skipped_time_is_refused_on_postgresql() -> None:
    store = PostgresStore("postgresql://postgres@127.0.0.1:5432/never_opened")
    with pytest.raises(keel.ConfigurationError, match="PostgreSQL uses the server's now"):
        TestEnv(store, clock=TestClock())


def test_a_test_env_waits_for_no_timer_in_process() -> None:
    clock = TestClock()
    with pytest.raises(keel.ConfigurationError, match="inline_wait=0"):
        TestEnv(MemoryStore(clock=clock.now), clock=clock, inline_wait=1.0)


def test_a_worker_clock_must_be_a_clock() -> None:
    with pytest.raises(keel.ConfigurationError, match="clock must be"):
        keel.Worker(MemoryStore(), clock=lambda: 0.0)  # type: ignore[arg-type]


async def test_a_worker_refuses_a_test_clock_the_store_does_not_read() -> None:
    worker = keel.Worker(MemoryStore(), clock=TestClock())  # the store reads time.time
    with pytest.raises(keel.ConfigurationError, match="give the store the same clock"):
        await worker.start()
