"""Workflow behaviour end to end, in-process, on every backend, every turn replayed."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

import pytest

import keel
from keel import RetryPolicy

calls: Counter[str] = Counter()
_lock = threading.Lock()


def count(name: str) -> int:
    with _lock:
        calls[name] += 1
        return calls[name]


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    calls.clear()


FAST = RetryPolicy(max_attempts=3, initial_interval=0.01, max_interval=0.05, jitter=0.0)


class Tier(Enum):
    GOLD = "gold"
    SILVER = "silver"


@dataclass
class Order:
    id: UUID
    amount: Decimal
    tier: Tier
    placed: datetime
    note: bytes = b""


@dataclass
class Receipt:
    order_id: UUID
    charged: Decimal
    tier: Tier


# --- workflows and steps --------------------------------------------------------------


@keel.step
def add(a: int, b: int) -> int:
    count("add")
    return a + b


@keel.step
async def double(x: int) -> int:
    count("double")
    return x * 2


@keel.workflow
async def three_steps(x: int) -> int:
    y = await add(x, 1)
    z = await double(y)
    return await add(z, 0)


@keel.step(name="workflows.charge")
def charge(order: Order) -> Receipt:
    count("charge")
    return Receipt(order.id, order.amount, order.tier)


@keel.workflow
async def typed_flow(order: Order) -> Receipt:
    receipt: Receipt = await charge(order)
    assert isinstance(receipt, Receipt) and isinstance(receipt.charged, Decimal)
    return receipt


@keel.step(retry=FAST)
def flaky(fail_times: int) -> str:
    n = count("flaky")
    if n <= fail_times:
        raise ConnectionError(f"flaky failure {n}")
    return f"ok after {n}"


@keel.workflow
async def flaky_flow(fail_times: int) -> str:
    try:
        return str(await flaky(fail_times))
    except keel.StepFailedError as exc:
        return f"gave up: {exc.error_type.rsplit('.', 1)[-1]} after {exc.attempts}"


class PaymentDeclined(Exception):
    pass


@keel.step(
    retry=RetryPolicy(max_attempts=5, initial_interval=0.01, non_retryable=(PaymentDeclined,))
)
def decline() -> None:
    count("decline")
    raise PaymentDeclined("card declined")


@keel.workflow
async def declined_flow() -> str:
    await decline()
    return "unreachable"


@keel.step(retry=RetryPolicy(max_attempts=2, initial_interval=0.01, jitter=0.0), timeout=0.05)
async def slow_step() -> str:
    count("slow")
    await asyncio.sleep(5)
    return "never"


@keel.workflow
async def timeout_flow() -> str:
    try:
        await slow_step()
    except keel.StepFailedError as exc:
        return exc.error_type
    return "no timeout"


@keel.workflow
async def sleepy(seconds: float) -> str:
    before = keel.now()
    await keel.sleep(seconds)
    after = keel.now()
    return f"{(after - before).total_seconds():.3f}"


@keel.workflow
async def two_signals() -> list[Any]:
    first = await keel.wait_for_signal("a")
    second = await keel.wait_for_signal("b")
    third = await keel.wait_for_signal("x")
    fourth = await keel.wait_for_signal("x")
    return [first, second, third, fourth]


@keel.workflow
async def signal_with_timeout(timeout: float) -> str:
    try:
        value = await keel.wait_for_signal("go", timeout=timeout)
    except keel.SignalTimeoutError:
        return "timed out"
    return f"got {value}"


@keel.workflow
async def deterministic_values() -> list[str]:
    t = keel.now()
    u = keel.uuid4()
    r = keel.random()
    await add(1, 1)  # with caching off, the return below runs in a replayed turn
    return [t.isoformat(), str(u), repr(r)]


@keel.workflow
async def side_effect_flow() -> int:
    value = await keel.side_effect(lambda: count("side_effect") * 10)
    await add(value, 1)
    return int(value)


@keel.workflow
async def fan_out(n: int) -> list[int]:
    return list(await asyncio.gather(*(double(i) for i in range(n))))


@keel.workflow
async def fails() -> None:
    await add(1, 2)
    raise ValueError("bad order data")


@keel.workflow
async def swallow_suspend() -> str:
    try:
        await keel.wait_for_signal("never")
    except BaseException:
        return "swallowed"
    return "?"


@keel.workflow
async def wait_forever() -> str:
    await keel.wait_for_signal("never")
    return "?"


# --- tests -----------------------------------------------------------------------------


async def test_three_step_workflow_completes(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(three_steps, 4)
        assert await run.result(timeout=10) == 10
        assert calls == {"add": 2, "double": 1}
        types = [e.type for e in await client.history(run.run_id)]
        assert types == [
            "run_started",
            "step_completed",
            "step_completed",
            "step_completed",
            "run_completed",
        ]
        info = await client.get(run.run_id)
        assert info.state is keel.RunState.COMPLETED


async def test_typed_payloads_round_trip(env: Any) -> None:
    order = Order(
        UUID(int=7), Decimal("19.99"), Tier.GOLD, datetime(2026, 1, 2, 3, 4, 5), b"\x00\xff"
    )
    async with env() as (client, _):
        receipt = await (await client.start(typed_flow, order)).result(timeout=10)
    assert receipt == Receipt(UUID(int=7), Decimal("19.99"), Tier.GOLD)


async def test_flaky_step_retries_then_succeeds(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(flaky_flow, 2)
        assert await run.result(timeout=10) == "ok after 3"
        history = await client.history(run.run_id)
    failed = [e for e in history if e.type == "step_attempt_failed"]
    assert [e.data["attempt"] for e in failed] == [1, 2]
    assert "flaky failure 1" in failed[0].data["error"]["message"]
    assert calls["flaky"] == 3


async def test_exhausted_retries_raise_catchable_step_failed(env: Any) -> None:
    async with env() as (client, _):
        result = await (await client.start(flaky_flow, 99)).result(timeout=10)
    assert result == "gave up: ConnectionError after 3"
    assert calls["flaky"] == 3


async def test_non_retryable_error_fails_at_once_and_fails_run(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(declined_flow)
        with pytest.raises(keel.RunFailedError) as info:
            await run.result(timeout=10)
    assert calls["decline"] == 1
    assert info.value.error_type == "keel.errors.StepFailedError"
    assert "card declined" in info.value.message
    assert "Traceback" in info.value.traceback


async def test_step_attempt_timeout(env: Any) -> None:
    async with env() as (client, _):
        result = await (await client.start(timeout_flow)).result(timeout=10)
    assert result == "keel.errors.StepTimeoutError"
    assert calls["slow"] == 2


async def test_uncaught_exception_fails_run_with_details(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(fails)
        with pytest.raises(keel.RunFailedError) as info:
            await run.result(timeout=10)
        assert info.value.error_type == "builtins.ValueError"
        assert info.value.message == "bad order data"
        assert "raise ValueError" in info.value.traceback
        got = await client.get(run.run_id)
        assert got.state is keel.RunState.FAILED
        assert got.error is not None and got.error["message"] == "bad order data"


@pytest.mark.parametrize("seconds", [0.05, 0.4])
async def test_durable_sleep_inline_and_suspended(env: Any, seconds: float) -> None:
    # inline_wait=0.2: the short sleep waits in the worker, the long one suspends.
    async with env(inline_wait=0.2) as (client, _):
        run = await client.start(sleepy, seconds)
        elapsed = float(await run.result(timeout=10))
        history = await client.history(run.run_id)
    assert elapsed >= seconds
    types = [e.type for e in history]
    assert "timer_started" in types and "timer_fired" in types


async def test_signals_buffered_before_wait_fifo_per_name(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(two_signals)
        # Sent before (and out of order with) the waits: b, a, x1, x2.
        await client.signal(run.run_id, "b", "B")
        await client.signal(run.run_id, "a", {"k": 1})
        await client.signal(run.run_id, "x", 1)
        await client.signal(run.run_id, "x", 2)
        assert await run.result(timeout=10) == [{"k": 1}, "B", 1, 2]


async def test_signal_wait_times_out(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(signal_with_timeout, 0.2)
        assert await run.result(timeout=10) == "timed out"
        types = [e.type for e in await client.history(run.run_id)]
    assert types[-2:] == ["signal_timed_out", "run_completed"]


async def test_signal_beats_timeout(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(signal_with_timeout, 30.0)
        await client.signal(run.run_id, "go", 5)
        assert await run.result(timeout=10) == "got 5"


async def test_now_uuid_random_are_journaled(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(deterministic_values)
        values = await run.result(timeout=10)
        history = await client.history(run.run_id)
    effects = [e for e in history if e.type == "side_effect"]
    assert [e.kind for e in effects] == ["now", "uuid4", "random"]
    assert effects[1].data["value"] == values[1]
    assert datetime.fromisoformat(values[0]).tzinfo is not None


async def test_side_effect_runs_once(env: Any) -> None:
    async with env() as (client, _):
        assert await (await client.start(side_effect_flow)).result(timeout=10) == 10
    assert calls["side_effect"] == 1


async def test_parallel_steps_with_gather(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(fan_out, 8)
        assert await run.result(timeout=10) == [i * 2 for i in range(8)]
    assert calls["double"] == 8


async def test_start_with_existing_run_id_runs_nothing_twice(env: Any) -> None:
    async with env() as (client, _):
        first = await client.start(three_steps, 1, run_id="order-42")
        second = await client.start(three_steps, 1, run_id="order-42")
        assert first.created and not second.created
        assert await second.result(timeout=10) == 4
    assert calls == {"add": 2, "double": 1}


async def test_result_timeout(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(wait_forever)
        with pytest.raises(keel.ResultTimeoutError):
            await run.result(timeout=0.2)


async def test_signal_errors(env: Any) -> None:
    async with env() as (client, _):
        with pytest.raises(keel.RunNotFoundError):
            await client.signal("no-such-run", "go")
        run = await client.start(three_steps, 1)
        await run.result(timeout=10)
        with pytest.raises(keel.RunFinishedError):
            await client.signal(run.run_id, "go")
        with pytest.raises(keel.SerializationError):
            await client.signal(run.run_id, "go", object())


async def test_cancel_waiting_run(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(wait_forever)
        await _wait_state(client, run.run_id, keel.RunState.SUSPENDED)
        await client.cancel(run.run_id)
        with pytest.raises(keel.RunCancelledError):
            await run.result(timeout=10)
        assert (await client.history(run.run_id))[-1].type == "run_cancelled"
        with pytest.raises(keel.RunFinishedError):
            await client.cancel(run.run_id)


async def test_swallowed_suspend_fails_run(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(swallow_suspend)
        with pytest.raises(keel.RunFailedError) as info:
            await run.result(timeout=10)
    assert info.value.error_type == "keel.errors.ControlFlowSwallowedError"


async def test_bad_inputs_at_call_site(env: Any) -> None:
    async with env() as (client, _):
        with pytest.raises(keel.SerializationError, match="x"):
            await client.start(three_steps, object())
        with pytest.raises(keel.WorkflowNotFoundError, match="nope"):
            await client.start("nope")
        with pytest.raises(TypeError):
            await client.start(three_steps, 1, 2, 3)
        assert (await client.list()).runs == []


async def test_list_runs_filters_and_pages(env: Any) -> None:
    async with env() as (client, _):
        ids = set()
        for i in range(5):
            run = await client.start(three_steps, i)
            await run.result(timeout=10)
            ids.add(run.run_id)
        waiting = await client.start(wait_forever)
        await _wait_state(client, waiting.run_id, keel.RunState.SUSPENDED)
        seen: list[str] = []
        cursor = None
        while True:
            page = await client.list(workflow="three_steps", limit=2, cursor=cursor)
            seen += [r.run_id for r in page.runs]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert sorted(seen) == sorted(ids)
        suspended = await client.list(state="suspended")
        assert [r.run_id for r in suspended.runs] == [waiting.run_id]
        with pytest.raises(keel.ConfigurationError):
            await client.list(state="bogus")


def test_step_outside_workflow_is_plain_call() -> None:
    assert add(2, 3) == 5
    assert asyncio.run(double(4)) == 8
    assert not keel.in_workflow()


async def _wait_state(client: keel.Client, run_id: str, state: keel.RunState) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if (await client.get(run_id)).state is state:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"run {run_id} never reached {state}")
