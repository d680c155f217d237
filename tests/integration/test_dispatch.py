"""Dispatched steps end to end: queues, task workers, priorities, limits, retries.

Every test runs on every backend with caching off (every turn replays from the
store), so the step_dispatched journal entries replay too.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

import keel
from keel import RetryPolicy
from keel.store.ports import Committed, Store, Suspend, Turn
from keel.workflow.registry import default_registry

_lock = threading.Lock()
calls: Counter[str] = Counter()
order: list[str] = []  # step bodies as they start
executed_by: list[str] = []  # owner of the worker that ran a step
active: Counter[str] = Counter()  # concurrent executions now, per step
peak: Counter[str] = Counter()  # most concurrent executions seen, per step


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()
    order.clear()
    executed_by.clear()
    active.clear()
    peak.clear()


def count(name: str) -> int:
    with _lock:
        calls[name] += 1
        return calls[name]


FAST = RetryPolicy(max_attempts=3, initial_interval=0.01, max_interval=0.05, jitter=0.0)


@dataclass
class Quote:
    item: str
    price: Decimal


# --- steps and workflows ----------------------------------------------------------------


@keel.step(name="dispatch.price", queue="gpu")
def price(item: str, qty: int) -> Quote:
    count("price")
    info = keel.current_step()
    assert info is not None
    executed_by.append(info.idempotency_key)
    return Quote(item, Decimal("1.25") * qty)


@keel.step(name="dispatch.local")
def local(x: int) -> int:
    count("local")
    return x + 1


@keel.workflow(name="dispatch.quote")
async def quote_flow(item: str, qty: int) -> Quote:
    n = await local(qty)
    q: Quote = await price(item, n)
    assert isinstance(q, Quote) and isinstance(q.price, Decimal)
    return q


@keel.step(name="dispatch.record", queue="batch")
async def record(label: str) -> str:
    with _lock:
        order.append(label)
    await asyncio.sleep(0.02)
    return label


@keel.workflow(name="dispatch.prioritised")
async def prioritised(labels: list[str], priorities: list[int]) -> list[str]:
    calls_ = [
        record.options(priority=p)(label) for label, p in zip(labels, priorities, strict=True)
    ]
    return list(await asyncio.gather(*calls_))


@keel.step(name="dispatch.busy", queue="limited")
async def busy(i: int) -> int:
    with _lock:
        active["busy"] += 1
        peak["busy"] = max(peak["busy"], active["busy"])
    try:
        await asyncio.sleep(0.05)
    finally:
        with _lock:
            active["busy"] -= 1
    return i


@keel.workflow(name="dispatch.fan_out")
async def fan_out(n: int) -> list[int]:
    return list(await asyncio.gather(*(busy(i) for i in range(n))))


@keel.step(name="dispatch.flaky", queue="gpu", retry=FAST)
def flaky(fail_times: int) -> str:
    n = count("flaky")
    if n <= fail_times:
        raise ConnectionError(f"flaky failure {n}")
    return f"ok after {n}"


@keel.workflow(name="dispatch.flaky_flow")
async def flaky_flow(fail_times: int) -> str:
    try:
        return str(await flaky(fail_times))
    except keel.StepFailedError as exc:
        return f"gave up: {exc.error_type.rsplit('.', 1)[-1]} after {exc.attempts}: {exc.message}"


@keel.workflow(name="dispatch.mixed")
async def mixed(x: int) -> list[Any]:
    # a local step, a dispatched one, a durable sleep and a signal around them
    a = await local(x)
    q, b = await asyncio.gather(price("bolt", a), local(a))
    await keel.sleep(0.01)
    got = await keel.wait_for_signal("go")
    c = await price.options(queue="other")("nut", b)
    return [a, str(q.price), b, got, str(c.price)]


@keel.step(name="dispatch.charge", queue="gpu", idempotency_key=lambda order: f"charge-{order}")
def charge(order: str) -> str:
    n = count("charge")
    return f"charged {order} (execution {n})"


@keel.workflow(name="dispatch.checkout")
async def checkout(order: str) -> str:
    return str(await charge(order))


@keel.workflow(name="dispatch.refund")
async def refund(order: str, key: str) -> str:
    return str(await price.options(idempotency_key=key)(order, 1))


# --- helpers ---------------------------------------------------------------------------


async def _wait_for(cond: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def _wait_for_state(client: keel.Client, run_id: str, state: keel.RunState) -> None:
    deadline = time.monotonic() + 10.0
    while (await client.get(run_id)).state is not state:
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} did not become {state}")
        await asyncio.sleep(0.02)


def _task_worker(store: Store, **options: Any) -> keel.Worker:
    options.setdefault("cache", False)
    options.setdefault("poll_interval", 0.05)
    options.setdefault("lease_ttl", 5.0)
    return keel.Worker(store, **options)


# --- tests -------------------------------------------------------------------------------


async def test_dispatched_step_runs_on_a_worker_serving_its_queue(env: Any) -> None:
    async with env(queues=["gpu"]) as (client, _):
        run = await client.start(quote_flow, "bolt", 3)
        assert await run.result(timeout=10) == Quote("bolt", Decimal("5.00"))
        history = await client.history(run.run_id)
    assert calls == {"local": 1, "price": 1}
    assert [e.type for e in history] == [
        "run_started",
        "step_completed",
        "step_dispatched",
        "step_completed",
        "run_completed",
    ]
    dispatched = history[2]
    assert dispatched.data["queue"] == "gpu" and dispatched.data["priority"] == 0
    assert dispatched.data["args_hash"] == history[3].data["args_hash"]
    assert history[3].data["attempt"] == 1
    # the step saw the run's stable idempotency key (run id + command id)
    assert executed_by == [f"{run.run_id}:step:dispatch.price#0"]


async def test_worker_without_the_queue_does_not_run_the_step(
    env: Any, make_store: Callable[[], Store]
) -> None:
    # The env worker (no queues) drives the run; only the task worker runs the step.
    async with env() as (client, runner):
        run = await client.start(quote_flow, "nut", 1)
        await _wait_for(lambda: calls["local"] == 1)
        await _wait_for_state(client, run.run_id, keel.RunState.SUSPENDED)  # no lease held
        await asyncio.sleep(0.3)
        assert calls["price"] == 0
        async with _task_worker(make_store(), queues={"gpu": 1}, owner="gpu-worker"):
            assert await run.result(timeout=10) == Quote("nut", Decimal("2.50"))
    assert calls == {"local": 1, "price": 1}
    assert runner.tasks.serves is False


async def test_priorities_order_tasks_dispatched_together(
    env: Any, make_store: Callable[[], Store]
) -> None:
    labels = ["low", "high", "mid", "top", "bottom"]
    priorities = [1, 10, 5, 20, -3]
    async with env() as (client, _):
        run = await client.start(prioritised, labels, priorities)
        # all five tasks are in the store before any task worker looks
        await _wait_for_state(client, run.run_id, keel.RunState.SUSPENDED)
        async with _task_worker(make_store(), queues=["batch"], task_concurrency=1):
            assert await run.result(timeout=10) == labels
    assert order == ["top", "high", "mid", "low", "bottom"]


async def test_per_queue_limit_is_respected(env: Any) -> None:
    async with env(queues={"limited": 2, "gpu": 5}, task_concurrency=8) as (client, _):
        run = await client.start(fan_out, 8)
        assert await run.result(timeout=15) == list(range(8))
    assert peak["busy"] == 2


async def test_cluster_wide_queue_limit_holds_over_several_workers(
    env: Any, make_store: Callable[[], Store]
) -> None:
    # Two task workers would run 4 + 4 at once; the database-wide limit says 2.
    async with env(queues={"limited": 4}, task_concurrency=4) as (client, _):
        await client.set_queue_limit("limited", 2)
        async with _task_worker(make_store(), queues={"limited": 4}, owner="second"):
            run = await client.start(fan_out, 10)
            assert await run.result(timeout=20) == list(range(10))
            assert [(q.queue, q.concurrency, q.leased) for q in await client.queues()] == [
                ("limited", 2, 0)
            ]
    assert peak["busy"] == 2


async def test_keyed_dispatched_step_reuses_the_stored_result(env: Any) -> None:
    async with env(queues=["gpu"]) as (client, _):
        first = await client.start(checkout, "o-1")
        assert await first.result(timeout=10) == "charged o-1 (execution 1)"
        second = await client.start(checkout, "o-1")
        assert await second.result(timeout=10) == "charged o-1 (execution 1)"
        other = await client.start(checkout, "o-2")
        assert await other.result(timeout=10) == "charged o-2 (execution 2)"
        again = await client.history(second.run_id)
        # .options(idempotency_key=...) on a queued step: the key, not the
        # arguments, decides (different quantity, same stored result).
        a = await client.start(refund, "bolt", "refund-7")
        stored = await a.result(timeout=10)
        b = await client.start(refund, "nut", "refund-7")
        assert await b.result(timeout=10) == stored
    assert calls == {"charge": 2, "price": 1}
    # The second run dispatched nothing: it journaled the stored result.
    assert [e.type for e in again] == ["run_started", "step_completed", "run_completed"]
    assert again[1].data["reused"] is True
    assert again[1].data["idempotency_key"] == "charge-o-1"


async def test_concurrent_keyed_dispatches_converge_on_the_first_result(
    env: Any, make_store: Callable[[], Store]
) -> None:
    async with env() as (client, _):
        runs = [await client.start(checkout, "o-9") for _ in range(3)]
        for run in runs:  # all three dispatched before any task worker runs one
            await _wait_for_state(client, run.run_id, keel.RunState.SUSPENDED)
        async with _task_worker(make_store(), queues={"gpu": 1}, owner="gpu"):
            results = [await run.result(timeout=10) for run in runs]
            histories = [await client.history(run.run_id) for run in runs]
    assert calls["charge"] == 3  # each dispatched task ran its body ...
    assert len(set(results)) == 1  # ... and every run kept the first stored result
    reused = [h[2].data.get("reused", False) for h in histories]
    assert sorted(reused) == [False, True, True]


async def test_task_concurrency_bounds_all_queues(env: Any) -> None:
    async with env(queues=["limited"], task_concurrency=3) as (client, _):
        run = await client.start(fan_out, 7)
        assert await run.result(timeout=15) == list(range(7))
    assert 1 <= peak["busy"] <= 3


async def test_retries_on_the_task_worker_then_success(env: Any) -> None:
    async with env(queues=["gpu"]) as (client, _):
        run = await client.start(flaky_flow, 2)
        assert await run.result(timeout=10) == "ok after 3"
        history = await client.history(run.run_id)
    assert calls["flaky"] == 3
    types = [e.type for e in history]
    # attempts are the task's business: the journal holds the dispatch and the outcome
    assert types == ["run_started", "step_dispatched", "step_completed", "run_completed"]
    assert history[2].data["attempt"] == 3


async def test_exhausted_retries_raise_catchable_step_failed(env: Any) -> None:
    async with env(queues=["gpu"]) as (client, _):
        run = await client.start(flaky_flow, 99)
        result = await run.result(timeout=10)
        history = await client.history(run.run_id)
    assert result == "gave up: ConnectionError after 3: flaky failure 3"
    assert calls["flaky"] == 3
    failed = [e for e in history if e.type == "step_failed"]
    assert len(failed) == 1 and failed[0].data["attempts"] == 3
    assert "Traceback" in failed[0].data["error"]["traceback"]


async def test_dispatched_steps_mix_with_local_steps_timers_and_signals(env: Any) -> None:
    async with env(queues=["gpu", "other"]) as (client, _):
        run = await client.start(mixed, 1)
        await client.signal(run.run_id, "go", "yes")
        assert await run.result(timeout=10) == [2, "2.50", 3, "yes", "3.75"]
        history = await client.history(run.run_id)
    dispatched = [e.data["queue"] for e in history if e.type == "step_dispatched"]
    assert dispatched == ["gpu", "other"]
    assert calls == {"local": 2, "price": 2}


async def test_replay_with_cache_on_too(env: Any) -> None:
    async with env(queues=["gpu"], cache=True) as (client, _):
        run = await client.start(quote_flow, "bolt", 1)
        assert await run.result(timeout=10) == Quote("bolt", Decimal("2.50"))
    assert calls == {"local": 1, "price": 1}


# --- configuration errors ---------------------------------------------------------------------


@pytest.mark.parametrize("queue", ["", "a#b", 3, "x" * 201])
def test_bad_queue_is_a_configuration_error(queue: Any) -> None:
    with pytest.raises(keel.ConfigurationError, match="queue"):
        keel.step(queue=queue)
    with pytest.raises(keel.ConfigurationError, match="queue"):
        price.options(queue=queue)


@pytest.mark.parametrize("priority", [1.5, "1", True, 2**31])
def test_bad_priority_is_a_configuration_error(priority: Any) -> None:
    with pytest.raises(keel.ConfigurationError, match="priority"):
        keel.step(queue="q", priority=priority)
    with pytest.raises(keel.ConfigurationError, match="priority"):
        price.options(priority=priority)


def test_options_keep_and_override_queue_and_priority() -> None:
    assert (price.queue, price.priority) == ("gpu", 0)
    other = price.options(priority=7)
    assert (other.queue, other.priority, other.name) == ("gpu", 7, "dispatch.price")
    assert local.options(queue="cpu").queue == "cpu"
    assert local.queue is None


def test_steps_are_registered_by_name() -> None:
    registry = keel.Registry()

    def body() -> int:
        return 1

    st = keel.step(name="reg.one", registry=registry)(body)
    assert registry.get_step("reg.one") is st
    assert registry.find_step("nope") is None
    with pytest.raises(keel.ConfigurationError, match="no step named"):
        registry.get_step("nope")
    again = keel.step(name="reg.one", registry=registry)(body)  # same origin: replaced
    assert registry.get_step("reg.one") is again

    def other() -> int:
        return 2

    with pytest.raises(keel.ConfigurationError, match="already used"):
        keel.step(name="reg.one", registry=registry)(other)
    assert default_registry.find_step("dispatch.price") is price


@pytest.mark.parametrize(
    ("queues", "task_concurrency"),
    [("gpu", 1), ({"gpu": 0}, 1), ({"": 1}, 1), (["a#b"], 1), (["gpu"], 0), ({"gpu": True}, 1)],
)
def test_bad_worker_queues(queues: Any, task_concurrency: int) -> None:
    with pytest.raises(keel.ConfigurationError):
        keel.Worker("memory://", queues=queues, task_concurrency=task_concurrency)


started = threading.Event()


@keel.step(name="dispatch.slow", queue="gpu", retry=FAST)
async def slow(seconds: float) -> str:
    n = count("slow")
    started.set()
    await asyncio.sleep(seconds)
    return f"slept on attempt {n}"


@keel.workflow(name="dispatch.slow_flow")
async def slow_flow(seconds: float) -> str:
    return str(await slow(seconds))


async def test_drain_lets_a_running_attempt_finish(make_store: Callable[[], Store]) -> None:
    started.clear()
    worker = _task_worker(make_store(), queues=["gpu"])
    await worker.start()
    run = await worker.client().start(slow_flow, 0.3)
    await _wait_for(started.is_set)
    await worker.stop(timeout=10)
    async with _task_worker(make_store()) as other:  # no queues: only drives the run
        assert await other.client().result(run.run_id, timeout=10) == "slept on attempt 1"
    assert calls["slow"] == 1


async def test_attempt_cut_off_by_drain_loses_its_lease_and_is_retried(
    make_store: Callable[[], Store],
) -> None:
    started.clear()
    worker = _task_worker(make_store(), queues=["gpu"], lease_ttl=0.5)
    await worker.start()
    run = await worker.client().start(slow_flow, 2.0)
    await _wait_for(started.is_set)
    await worker.stop(timeout=0.05)  # the attempt is cut off: no report, the lease expires
    async with _task_worker(make_store(), queues=["gpu"], lease_ttl=0.5) as other:
        result = await other.client().result(run.run_id, timeout=15)
        history = await other.client().history(run.run_id)
    assert result == "slept on attempt 2"  # the expired lease consumed attempt 1
    assert history[-2].data["attempt"] == 2


class _LateSuspend:
    """A memory store whose suspending commits go through only after the run's task
    has completed: the completion lands while the run is still leased, so only
    the suspend's ``wake_on_tasks`` can notice it."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.runs = _LateSuspendRuns(inner)
        self.due_at_suspend = self.runs.due_at_suspend

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _LateSuspendRuns:
    def __init__(self, store: Any) -> None:
        self._store = store
        self.due_at_suspend: list[bool] = []  # per late suspend: due at once?

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store.runs, name)

    async def commit(self, lease: Any, turn: Turn) -> Committed:
        if not isinstance(turn.end, Suspend):
            return await self._store.runs.commit(lease, turn)
        task = await self._store.tasks.get(lease.run_id, "step:dispatch.price#0")
        while task is not None and task.state not in ("completed", "failed"):
            await asyncio.sleep(0.01)
            task = await self._store.tasks.get(lease.run_id, "step:dispatch.price#0")
        committed = await self._store.runs.commit(lease, turn)
        if task is not None:
            run = await self._store.reads.get_run(lease.run_id)
            self.due_at_suspend.append(
                run.wake_at is not None and run.wake_at <= await self._store.now()
            )
        return committed


async def test_task_done_while_the_run_was_leased_is_still_noticed() -> None:
    from keel.store.memory import MemoryStore

    store = _LateSuspend(MemoryStore())
    async with _task_worker(store, queues=["gpu"]) as worker:  # type: ignore[arg-type]
        run = await worker.client().start(quote_flow, "late", 1)
        assert await run.result(timeout=10) == Quote("late", Decimal("2.50"))
    # The suspend that came after the task finished left the run due at once.
    assert store.due_at_suspend and all(store.due_at_suspend)
