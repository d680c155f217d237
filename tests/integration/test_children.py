"""Child workflows end to end, on every backend, every turn replayed from the store."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from typing import Any

import pytest

import keel
from keel.errors import LeaseLostError
from keel.store.base import Lease
from keel.store.ports import Committed, Turn

calls: Counter[str] = Counter()
_lock = threading.Lock()
leaked: list[keel.ChildHandle[Any]] = []


def count(name: str) -> int:
    with _lock:
        calls[name] += 1
        return calls[name]


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()
    leaked.clear()


# --- workflows ------------------------------------------------------------------------


@keel.step(name="children.double")
def double(x: int) -> int:
    count(f"double-{x}")
    return 2 * x


@keel.step(name="children.prepare")
def prepare(n: int) -> int:
    count("prepare")
    return n


@keel.workflow(name="children.leaf")
async def leaf(x: int) -> int:
    return await double(x)


@keel.workflow(name="children.fan")
async def fan(n: int) -> list[int]:
    n = await prepare(n)
    handles = [await keel.start_child(leaf, i) for i in range(n)]
    return list(await asyncio.gather(*(h.result() for h in handles)))


@keel.workflow(name="children.fan_gather")
async def fan_gather(n: int) -> list[int]:
    return list(await asyncio.gather(*(keel.run_child(leaf, i) for i in range(n))))


@keel.workflow(name="children.boom")
async def boom(msg: str) -> int:
    raise ValueError(msg)


@keel.workflow(name="children.catcher")
async def catcher() -> str:
    try:
        await keel.run_child(boom, "bad input")
    except keel.ChildWorkflowError as exc:
        return f"{exc.error_type}|{exc.message}|{exc.child_run_id}"
    return "not raised"


@keel.workflow(name="children.waiter")
async def waiter() -> str:
    return str(await keel.wait_for_signal("go"))


@keel.workflow(name="children.await_waiter")
async def await_waiter() -> str:
    handle = await keel.start_child(waiter, child_id="the-waiter")
    try:
        return await handle.result()
    except keel.ChildWorkflowCancelled as exc:
        return f"cancelled {exc.child_run_id}"


@keel.workflow(name="children.close")
async def close(policy: str) -> str:
    handle = await keel.start_child(waiter, parent_close=policy)  # type: ignore[arg-type]
    return handle.run_id


@keel.workflow(name="children.middle")
async def middle() -> str:
    return await keel.run_child(waiter)


@keel.workflow(name="children.top")
async def top() -> str:
    return await keel.run_child(middle)


gate = threading.Event()


@keel.step(name="children.blocked")
def blocked() -> None:
    count("blocked")
    gate.wait(20)


@keel.workflow(name="children.busy_parent")
async def busy_parent() -> None:
    await keel.start_child(waiter, child_id="busy-child")
    await blocked()


@keel.workflow(name="children.nest")
async def nest(level: int) -> str:
    try:
        return await keel.run_child(nest, level + 1)
    except keel.ChildWorkflowError as exc:
        if "depth" not in exc.message:
            raise
        return f"stopped at {level}: {exc.message}"


@keel.workflow(name="children.named")
async def named(child_id: str) -> str:
    try:
        await keel.start_child(leaf, 1, child_id=child_id, parent_close="abandon")
    except keel.ChildWorkflowError as exc:
        return f"{exc.error_type}|{exc.message}"
    return "started"


@keel.workflow(name="children.twins")
async def twins() -> list[str]:
    outcomes = await asyncio.gather(
        keel.start_child(leaf, 1, child_id="twin", parent_close="abandon"),
        keel.start_child(leaf, 2, child_id="twin", parent_close="abandon"),
        return_exceptions=True,
    )
    return sorted(
        o.error_type if isinstance(o, keel.ChildWorkflowError) else f"started {o.run_id}"  # type: ignore[union-attr]
        for o in outcomes
    )


@keel.workflow(name="children.misuse")
async def misuse() -> list[str]:
    errors = []
    try:
        keel.get_child("nope")
    except keel.WorkflowError as exc:
        errors.append(str(exc))
    try:
        await leaked[0].result()
    except keel.WorkflowError as exc:
        errors.append(str(exc))
    for bad in (
        lambda: keel.start_child(leaf, object()),
        lambda: keel.start_child(leaf, 1, parent_close="later"),  # type: ignore[arg-type]
        lambda: keel.start_child(leaf, 1, child_id=""),
    ):
        try:
            await bad()
        except (keel.SerializationError, keel.ConfigurationError) as exc:
            errors.append(type(exc).__name__)
    h = await keel.start_child(leaf, 5)
    assert keel.get_child(h.run_id).run_id == h.run_id
    errors.append(str(await keel.get_child(h.run_id).result()))
    return errors


@keel.workflow(name="children.leaker")
async def leaker() -> str:
    handle = await keel.start_child(leaf, 3)
    leaked.append(handle)
    return str(await handle.result())


# --- helpers ------------------------------------------------------------------------------


async def _wait_state(client: keel.Client, run_id: str, *states: keel.RunState) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if (await client.get(run_id)).state in states:
                return
        except keel.RunNotFoundError:
            pass
        await asyncio.sleep(0.01)
    raise AssertionError(f"run {run_id} never reached {states}")


async def _children_of(client: keel.Client, workflow: str) -> list[keel.RunInfo]:
    return (await client.list(workflow=workflow, limit=500)).runs


# --- tests ------------------------------------------------------------------------------


async def test_fan_out_fan_in(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(fan, 4, run_id="fan-1")
        assert await run.result(timeout=20) == [0, 2, 4, 6]
        kids = await _children_of(client, "children.leaf")
        assert sorted(k.run_id for k in kids) == [
            f"fan-1/child:children.leaf#{i}" for i in range(4)
        ]
        assert {(k.parent_run_id, k.depth) for k in kids} == {("fan-1", 1)}
        assert ((await client.get("fan-1")).parent_run_id, (await client.get("fan-1")).depth) == (
            None,
            0,
        )
        history = await client.history("fan-1")
        assert [e.type for e in history].count("child_started") == 4
        assert [e.type for e in history].count("child_completed") == 4
        # Every turn replayed the parent, and no replay started a child again.
        assert calls["prepare"] == 1 and all(calls[f"double-{i}"] == 1 for i in range(4))


async def test_fan_out_with_gather(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(fan_gather, 3)
        assert await run.result(timeout=20) == [0, 2, 4]
        assert len(await _children_of(client, "children.leaf")) == 3


async def test_child_failure_is_a_typed_error_the_parent_catches(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(catcher, run_id="c-1")
        error_type, message, child = (await run.result(timeout=20)).split("|")
    assert (error_type, message) == ("builtins.ValueError", "bad input")
    assert child == "c-1/child:children.boom#0"


async def test_cancelled_child_reaches_the_parent(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(await_waiter)
        await _wait_state(client, "the-waiter", keel.RunState.SUSPENDED)
        await client.cancel("the-waiter")
        assert await run.result(timeout=20) == "cancelled the-waiter"


async def test_parent_close_cancel_is_the_default(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(close, "cancel")
        child = await run.result(timeout=20)
        await _wait_state(client, child, keel.RunState.CANCELLED)
        assert (await client.history(child))[-1].type == "run_cancelled"


async def test_parent_close_abandon_leaves_the_child_running(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(close, "abandon")
        child = await run.result(timeout=20)
        await _wait_state(client, child, keel.RunState.SUSPENDED)
        assert not (await client.get(child)).state.is_terminal
        await client.signal(child, "go", "later")
        assert await client.result(child, timeout=20) == "later"


async def test_parent_close_wait_finishes_the_parent_after_the_child(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(close, "wait", run_id="w-1")
        child = "w-1/child:children.waiter#0"
        await _wait_state(client, child, keel.RunState.SUSPENDED)
        # The parent returned, but suspends until its 'wait' child has ended.
        await _wait_state(client, "w-1", keel.RunState.SUSPENDED)
        history = [e.type for e in await client.history("w-1")]
        assert "run_completed" not in history
        await client.signal(child, "go", "done")
        assert await run.result(timeout=20) == child
        assert (await client.get(child)).state is keel.RunState.COMPLETED


async def test_cancelling_a_parent_that_waits_cancels_its_wait_children(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(close, "wait", run_id="w-2")
        child = "w-2/child:children.waiter#0"
        await _wait_state(client, child, keel.RunState.SUSPENDED)
        await _wait_state(client, "w-2", keel.RunState.SUSPENDED)
        await client.cancel("w-2")
        with pytest.raises(keel.RunCancelledError):
            await run.result(timeout=20)
        await _wait_state(client, child, keel.RunState.CANCELLED)


async def test_cancel_cascades_through_grandchildren(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(top, run_id="t")
        child = "t/child:children.middle#0"
        grandchild = f"{child}/child:children.waiter#0"
        await _wait_state(client, grandchild, keel.RunState.SUSPENDED)
        await _wait_state(client, child, keel.RunState.SUSPENDED)
        await client.cancel("t")
        with pytest.raises(keel.RunCancelledError):
            await run.result(timeout=20)
        for run_id in (child, grandchild):
            await _wait_state(client, run_id, keel.RunState.CANCELLED)


async def test_cancelling_a_held_parent_cascades(env: Any) -> None:
    """The parent is running a step (its worker holds it) when it is cancelled."""
    gate.clear()
    try:
        async with env() as (client, _):
            run = await client.start(busy_parent, run_id="busy")
            await _wait_state(client, "busy-child", keel.RunState.SUSPENDED)
            deadline = time.monotonic() + 15
            while calls["blocked"] == 0:
                assert time.monotonic() < deadline, "the step never started"
                await asyncio.sleep(0.01)
            assert (
                await client.cancel("busy")
            ) is keel.RunState.RUNNING  # held: its worker ends it
            with pytest.raises(keel.RunCancelledError):
                await run.result(timeout=20)
            await _wait_state(client, "busy-child", keel.RunState.CANCELLED)
    finally:
        gate.set()


async def test_max_depth_is_a_clear_error_in_the_parent(env: Any) -> None:
    async with env(max_child_depth=2) as (client, _):
        run = await client.start(nest, 0)
        result = await run.result(timeout=20)
    assert result.startswith("stopped at 2: maximum child workflow depth 2 exceeded")


async def test_child_id_collision_is_a_typed_error(env: Any) -> None:
    async with env() as (client, _):
        taken = await client.start(leaf, 1, run_id="taken")
        await taken.result(timeout=20)
        run = await client.start(named, "taken")
        error_type, message = (await run.result(timeout=20)).split("|")
        assert error_type == "keel.errors.RunExistsError"
        assert "'taken' is taken" in message
        fresh = await client.start(named, "fresh-child")
        assert await fresh.result(timeout=20) == "started"
        assert await client.result("fresh-child", timeout=20) == 2


async def test_two_children_with_one_id_started_together(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(twins)
        assert await run.result(timeout=20) == ["keel.errors.RunExistsError", "started twin"]
        assert await client.result("twin", timeout=20) == 2


async def test_unknown_child_and_handle_misuse(env: Any) -> None:
    async with env() as (client, _):
        first = await client.start(leaker)
        assert await first.result(timeout=20) == "6"
        run = await client.start(misuse)
        errors = await run.result(timeout=20)
    assert "unknown child 'nope'" in errors[0]
    assert "unknown child" in errors[1] and "another workflow run" in errors[1]
    assert errors[2:] == ["SerializationError", "ConfigurationError", "ConfigurationError", "10"]


async def test_crash_right_after_a_child_started(env: Any) -> None:
    """The worker dies right after the start committed: another finishes, one child."""
    async with env(lease_ttl=0.5) as (client, worker):
        runs = worker.store.runs
        real = runs.commit
        crashed = asyncio.Event()

        async def start_then_die(lease: Lease, turn: Turn) -> Committed:
            committed = await real(lease, turn)
            if turn.children and not crashed.is_set():
                crashed.set()
                # The process "dies" after the commit: no release, the lease just expires.
                raise LeaseLostError("fan-crash", 0, "simulated crash")
            return committed

        runs.commit = start_then_die  # type: ignore[method-assign]
        await client.start(fan, 2, run_id="fan-crash")
        await asyncio.wait_for(crashed.wait(), 20)
        del runs.commit  # the next worker has the real method
    async with env(lease_ttl=0.5) as (client, _):
        assert await client.result("fan-crash", timeout=20) == [0, 2]
        kids = await _children_of(client, "children.leaf")
        assert sorted(k.run_id for k in kids) == [
            "fan-crash/child:children.leaf#0",
            "fan-crash/child:children.leaf#1",
        ]
        history = [e.type for e in await client.history("fan-crash")]
        assert history.count("child_started") == 2
    assert calls["prepare"] == 1 and calls["double-0"] == 1 and calls["double-1"] == 1


async def test_children_with_resident_executions(env: Any) -> None:
    """The same with caching on: the parent's execution stays in memory between writes."""
    async with env(cache=True) as (client, _):
        run = await client.start(fan, 3)
        assert await run.result(timeout=20) == [0, 2, 4]
        caught = await client.start(catcher)
        assert (await caught.result(timeout=20)).startswith("builtins.ValueError|bad input|")
        waiting = await client.start(close, "wait", run_id="w-3")
        child = "w-3/child:children.waiter#0"
        await _wait_state(client, child, keel.RunState.SUSPENDED)
        await client.signal(child, "go", "ok")
        assert await waiting.result(timeout=20) == child
