"""Replay resolves an awaited command on the spot when nothing else could run
first (Execution.on_await). These workflows are built so that a shortcut taken
too eagerly would change what the code sees; each must replay exactly as it ran."""

from __future__ import annotations

import asyncio

import pytest

from keel.core.loop import DeterministicLoop
from tests.unit.test_replay import a, b, replay, run_live


async def task_scheduled_between_call_and_await() -> list[int]:
    seen: list[int] = []

    async def other() -> None:
        seen.append(await a(100))  # the same step: its ordinal depends on who asks first

    first = a(1)
    task = asyncio.ensure_future(other())  # runs before the await below resumes
    seen.append(await first)
    seen.append(await a(2))
    await task
    return seen


def test_a_task_scheduled_before_the_await_runs_first_in_replay_too() -> None:
    ex, journal = run_live(task_scheduled_between_call_and_await)
    assert ex.outcome is not None and ex.outcome.status == "completed", ex.outcome
    commands = [e.command for e in journal[1:]]
    assert commands == ["step:a#0", "step:a#1", "step:a#2"]
    again = replay(task_scheduled_between_call_and_await, journal)
    assert again.outcome is not None and again.outcome.result == ex.outcome.result


async def callback_before_await() -> list[str]:
    seen: list[str] = []
    future = a(1)
    future.add_done_callback(lambda _: seen.append("callback"))
    await future
    seen.append("after await")
    return seen


def test_done_callbacks_run_before_the_awaiting_code_in_replay_too() -> None:
    ex, journal = run_live(callback_before_await)
    assert ex.outcome is not None and ex.outcome.result == b'["callback","after await"]'
    again = replay(callback_before_await, journal)
    assert again.outcome is not None and again.outcome.result == ex.outcome.result


async def sequential(n: int) -> int:
    value = 0
    for _ in range(n):
        value = await a(value)
    return value


def test_sequential_replay_resolves_each_await_without_a_loop_round(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, journal = run_live(sequential, 50)
    rounds = 0
    drain = DeterministicLoop.drain

    def counting(loop: DeterministicLoop) -> None:
        nonlocal rounds
        rounds += 1
        drain(loop)

    monkeypatch.setattr(DeterministicLoop, "drain", counting)
    ex = replay(sequential, journal, 50)
    assert ex.outcome is not None and ex.outcome.result == b"50"
    # One round ran the code from the top; every step result was taken at its await.
    assert rounds == 1


async def cancels_a_step_future() -> int:
    abandoned = a(1)
    abandoned.cancel()  # the workflow gives up on it; its step may still finish
    return await b(2)


def test_a_step_finishing_after_the_workflow_cancelled_its_future_is_moot() -> None:
    ex, journal = run_live(cancels_a_step_future)
    assert ex.outcome is not None and ex.outcome.result == b"20", ex.outcome
    assert [e.command for e in journal[1:]] == ["step:a#0", "step:b#0"]
    again = replay(cancels_a_step_future, journal)
    assert again.outcome is not None and again.outcome.result == b"20"
