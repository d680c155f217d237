"""Workflows for the metrics, logs and health scenarios: a step that fails once
then succeeds, a run that fails for good, a plain one."""

from __future__ import annotations

import keel

QUICK = keel.RetryPolicy(max_attempts=2, initial_interval=0.01, jitter=0.0)
ONCE = keel.RetryPolicy(max_attempts=1)


@keel.step(name="obs.flaky", retry=QUICK)
def flaky(x: int) -> int:
    info = keel.current_step()
    assert info is not None
    if info.attempt == 1:
        raise RuntimeError(f"first attempt of {x} fails")
    return x * 2


@keel.step(name="obs.doomed", retry=ONCE)
def doomed(x: int) -> int:
    raise ValueError(f"{x} never works")


@keel.workflow(name="obs.retried")
async def retried(x: int) -> int:
    return await flaky(x)


@keel.workflow(name="obs.failing")
async def failing(x: int) -> int:
    return await doomed(x)


@keel.workflow(name="obs.napping")
async def napping(x: int) -> int:
    # Longer than the worker's inline wait: the run suspends and its next turn
    # replays the journal.
    await keel.sleep(1.2)
    return await flaky(x)
