"""Continue-as-new end to end, on every backend, every turn replayed from the store."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any

import pytest

import keel
from keel.core.events import EventType
from keel.core.journal import JournalEntry
from keel.errors import LeaseLostError
from keel.replay import check_journal
from keel.store.base import Lease
from keel.store.ports import Committed, Continue, Turn
from keel.worker.plan.ending import successor_id
from tests.integration._support import wait_state, wait_until

calls: Counter[str] = Counter()
_lock = threading.Lock()


def count(name: str) -> int:
    with _lock:
        calls[name] += 1
        return calls[name]


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()


# --- workflows ------------------------------------------------------------------------


@keel.step(name="can.add")
def add(total: int, n: int) -> int:
    count(f"add-{n}")
    return total + n


@keel.workflow(name="can.loop")
async def loop(n: int, total: int = 0, rounds: int = 3) -> int:
    total = await add(total, n)
    if n + 1 < rounds:
        keel.continue_as_new(n + 1, total=total, rounds=rounds)
    return total


@keel.workflow(name="can.mailbox")
async def mailbox(generation: int) -> list[str]:
    if generation == 0:
        await keel.wait_for_signal("go")
        keel.continue_as_new(1)  # "msg" signals are still buffered: they move on
    first = await keel.wait_for_signal("msg")
    second = await keel.wait_for_signal("msg")
    return [str(first), str(second)]


@keel.workflow(name="can.sleeper")
async def sleeper(generation: int) -> str:
    if generation == 0:
        keel.continue_as_new(1)
    await keel.wait_for_signal("never")
    return "woke"


@keel.workflow(name="can.bad")
async def bad(value: Any = None) -> str:
    try:
        keel.continue_as_new(object())
    except keel.SerializationError as exc:
        note = f"caught: {exc}"
    keel.continue_as_new(object())  # uncaught: the run fails with it
    return note


@keel.workflow(name="can.swallow")
async def swallow() -> str:
    try:
        keel.continue_as_new()
    except BaseException:  # the misuse under test
        return "swallowed"
    return "not raised"


@keel.workflow(name="can.parent")
async def parent() -> int:
    return await keel.run_child(loop, 0, rounds=3, child_id="can-child")


# --- tests ---------------------------------------------------------------------------


async def test_loop_continues_and_result_follows_the_chain(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(loop, 0, rounds=4, run_id="loop-1")
        assert await run.result(timeout=20) == 0 + 1 + 2 + 3
        ids = ["loop-1"] + [successor_id("loop-1", g) for g in (1, 2, 3)]
        infos = [await client.get(i) for i in ids]
        assert [i.state for i in infos] == ["continued", "continued", "continued", "completed"]
        assert {i.chain_id for i in infos} == {"loop-1"}
        assert [i.continued_to for i in infos] == [*ids[1:], None]
        for i, run_id in enumerate(ids):
            history = [(e.type, e.command) for e in await client.history(run_id)]
            end = ("run_continued", None) if i < 3 else ("run_completed", None)
            # each run journals only its own commands: a fresh, empty journal
            assert history == [("run_started", None), ("step_completed", "step:can.add#0"), end]
        assert await client.result(ids[2], timeout=5) == 6  # any id of the chain
    assert calls == Counter({"add-0": 1, "add-1": 1, "add-2": 1, "add-3": 1})


async def test_signals_reach_the_tip_and_buffered_ones_move(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(mailbox, 0, run_id="mb")
        await client.signal("mb", "msg", "early")  # buffered in run 0, never read there
        await client.signal("mb", "go")
        await wait_state(client, "mb", keel.RunState.CONTINUED)
        await client.signal("mb", "msg", "late")  # the first id reaches the tip
        assert await run.result(timeout=20) == ["early", "late"]
        tip = successor_id("mb", 1)
        received = [e for e in await client.history(tip) if e.type == "signal_received"]
        assert len(received) == 2
        first = [e for e in await client.history("mb") if e.type == "signal_received"]
        assert len(first) == 1  # "go" only


async def _exists(client: keel.Client, run_id: str) -> bool:
    try:
        await client.get(run_id)
    except keel.RunNotFoundError:
        return False
    return True


async def test_cancel_via_the_first_id_cancels_the_tip(env: Any) -> None:
    async with env() as (client, _):
        await client.start(sleeper, 0, run_id="sl")
        tip = successor_id("sl", 1)
        await wait_until(lambda: _exists(client, tip), f"run {tip} to exist")
        await wait_state(client, tip, keel.RunState.SUSPENDED)
        await client.cancel("sl")
        with pytest.raises(keel.RunCancelledError):
            await client.result("sl", timeout=20)
        assert (await client.get(tip)).state is keel.RunState.CANCELLED
        assert (await client.get("sl")).state is keel.RunState.CONTINUED
        with pytest.raises(keel.RunFinishedError):
            await client.signal("sl", "never")


async def test_non_serializable_input_fails_at_the_call_and_writes_no_successor(
    env: Any,
) -> None:
    async with env() as (client, _):
        run = await client.start(bad, run_id="bad")
        with pytest.raises(keel.RunFailedError) as info:
            await run.result(timeout=20)
        assert info.value.error_type == "keel.errors.SerializationError"
        assert "continue_as_new of workflow 'can.bad'" in info.value.message
        assert not await _exists(client, successor_id("bad", 1))
        assert (await client.get("bad")).continued_to is None
        page = await client.list(workflow="can.bad")
        assert [r.run_id for r in page.runs] == ["bad"]


async def test_swallowing_continue_as_new_fails_the_run(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(swallow, run_id="sw")
        with pytest.raises(keel.RunFailedError) as info:
            await run.result(timeout=20)
        assert info.value.error_type == "keel.errors.ControlFlowSwallowedError"
        assert not await _exists(client, successor_id("sw", 1))


async def test_a_child_that_continues_reports_its_chains_result(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(parent, run_id="p")
        assert await run.result(timeout=20) == 0 + 1 + 2
        last = await client.get(successor_id("can-child", 2))
        assert last.parent_run_id == "p" and last.state is keel.RunState.COMPLETED
        history = [e.type for e in await client.history("p")]
        assert history.count("child_completed") == 1


@pytest.mark.parametrize("when", ["before-commit", "after-commit"])
async def test_crash_around_the_switch_gives_exactly_one_successor(env: Any, when: str) -> None:
    """The worker dies right before, or right after, the continue transaction
    commits; another worker takes over after the lease expired."""
    async with env(lease_ttl=0.5) as (client, worker):
        runs = worker.store.runs
        real = runs.commit
        crashed = asyncio.Event()

        async def die(lease: Lease, turn: Turn) -> Committed:
            if isinstance(turn.end, Continue) and not crashed.is_set():
                if when == "after-commit":
                    await real(lease, turn)
                crashed.set()
                # The process "dies": no release, the lease just expires.
                raise LeaseLostError("crash", 0, "simulated crash")
            return await real(lease, turn)

        runs.commit = die  # type: ignore[method-assign]
        await client.start(loop, 0, rounds=3, run_id="cr")
        await asyncio.wait_for(crashed.wait(), 20)
        del runs.commit  # the next worker has the real method
    async with env(lease_ttl=0.5) as (client, _):
        assert await client.result("cr", timeout=20) == 0 + 1 + 2
        page = await client.list(workflow="can.loop")
        assert sorted(r.run_id for r in page.runs) == sorted(
            ["cr", successor_id("cr", 1), successor_id("cr", 2)]
        )
        for run_id in ("cr", successor_id("cr", 1)):
            history = [e.type for e in await client.history(run_id)]
            assert history.count("run_continued") == 1
    # no completed step ran twice
    assert calls == Counter({"add-0": 1, "add-1": 1, "add-2": 1})


async def test_continued_runs_replay_cleanly_with_the_checker(env: Any) -> None:
    async with env() as (client, worker):
        run = await client.start(loop, 0, rounds=2, run_id="rp")
        assert await run.result(timeout=20) == 1
        for run_id, outcome in (("rp", "continued"), (successor_id("rp", 1), "completed")):
            records = await worker.store.reads.history(run_id)
            journal = [JournalEntry(r.seq, EventType(r.type), r.command, r.data) for r in records]
            verdict = check_journal(journal, run_id=run_id)
            assert (verdict.status, verdict.outcome) == ("ok", outcome), verdict.message
            # A continued run whose recorded input differs from what the code asks for
            # is reported as diverged, not silently accepted.
            if outcome == "continued":
                last = journal[-1]
                data = last.data.replace(b'"n":1', b'"n":7')
                assert data != last.data
                changed = [*journal[:-1], JournalEntry(last.seq, last.type, None, data)]
                assert check_journal(changed, run_id=run_id).status == "diverged"
