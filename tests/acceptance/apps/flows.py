"""Workflows for the crash, load, signal, sleep, drain and bad-input scenarios.

Names carry an ``acc.`` prefix so they never clash with other tests' workflows
in the default registry.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import keel
from tests.acceptance.apps._record import record, wait_gate

# --- five steps, the middle one gated (SIGKILL mid-workflow) ------------------------------


@keel.step(name="acc.s1")
def s1(x: int) -> int:
    record()
    return x + 1


@keel.step(name="acc.s2")
def s2(x: int) -> int:
    record()
    return x * 2


@keel.step(name="acc.s3")
def s3(x: int, gate: str) -> int:
    record()
    wait_gate(gate)
    record("end")
    return x + 30


@keel.step(name="acc.s4")
async def s4(x: int) -> int:
    record()
    return x * 3


@keel.step(name="acc.s5")
def s5(x: int) -> int:
    record()
    return x - 5


@keel.workflow(name="acc.five_steps")
async def five_steps(x: int, gate: str) -> list[int]:
    v1 = await s1(x)
    v2 = await s2(v1)
    v3 = await s3(v2, gate)
    v4 = await s4(v3)
    v5 = await s5(v4)
    return [v1, v2, v3, v4, v5]


def five_steps_expected(x: int) -> list[int]:
    v1 = x + 1
    v2 = v1 * 2
    v3 = v2 + 30
    v4 = v3 * 3
    return [v1, v2, v3, v4, v4 - 5]


# --- three short steps (load and two-worker scenarios) -----------------------------------


def _pause(max_ms: int) -> float:
    return random.uniform(0, max_ms) / 1000


@keel.step(name="acc.t1")
def t1(i: int, pause_ms: int) -> int:
    record()
    time.sleep(_pause(pause_ms))
    return i * 10


@keel.step(name="acc.t2")
def t2(x: int, gate: str, pause_ms: int) -> int:
    record()
    if gate:
        wait_gate(gate)
    time.sleep(_pause(pause_ms))
    return x + 1


@keel.step(name="acc.t3")
async def t3(x: int, pause_ms: int) -> str:
    record()
    await asyncio.sleep(_pause(pause_ms))
    return f"r{x}"


@keel.workflow(name="acc.three_steps")
async def three_steps(i: int, gate: str = "", pause_ms: int = 0) -> str:
    """Steps pause up to ``pause_ms``; with a ``gate``, step 2 waits for it."""
    a = await t1(i, pause_ms)
    b = await t2(a, gate, pause_ms)
    return str(await t3(b, pause_ms))


def three_steps_expected(i: int) -> str:
    return f"r{i * 10 + 1}"


# --- a step, then a signal ----------------------------------------------------------------


@keel.step(name="acc.prepare")
def prepare(order: str) -> str:
    record()
    return f"prepared {order}"


@keel.workflow(name="acc.approval")
async def approval(order: str) -> dict[str, Any]:
    prepared = await prepare(order)
    decision = await keel.wait_for_signal("approve")
    return {"prepared": prepared, "decision": decision}


# --- a step, a durable sleep, a step ------------------------------------------------------


@keel.step(name="acc.before_sleep")
def before_sleep() -> str:
    record()
    return "before"


@keel.step(name="acc.after_sleep")
def after_sleep() -> str:
    record()
    return "after"


@keel.workflow(name="acc.sleeper")
async def sleeper(seconds: float) -> float:
    await before_sleep()
    t0 = keel.now()
    await keel.sleep(seconds)
    t1_ = keel.now()
    await after_sleep()
    return (t1_ - t0).total_seconds()


# --- a slow step for the SIGTERM drain ----------------------------------------------------


@keel.step(name="acc.slow")
def slow(seconds: float) -> str:
    record()
    time.sleep(seconds)
    record("end")
    return "slow done"


@keel.step(name="acc.quick")
def quick(prev: str) -> str:
    record()
    return prev + ", quick done"


@keel.workflow(name="acc.drain")
async def drain(seconds: float) -> str:
    return str(await quick(await slow(seconds)))


# --- typed input (bad-input scenario) -----------------------------------------------------


@keel.step(name="acc.square")
def square(n: int) -> int:
    record()
    return n * n


@keel.workflow(name="acc.typed")
async def typed(n: int) -> int:
    return int(await square(n))


# --- a parent and its child (SIGKILL right after the child started) ---------------------


@keel.step(name="acc.before_child")
def before_child(x: int) -> int:
    record()
    return x + 1


@keel.step(name="acc.after_child")
def after_child(x: int, gate: str) -> int:
    record()
    wait_gate(gate)
    return x * 10


@keel.step(name="acc.in_child")
def in_child(x: int, gate: str) -> int:
    record()
    wait_gate(gate)
    return x * 2


@keel.workflow(name="acc.kid")
async def kid(x: int, gate: str) -> int:
    return await in_child(x, gate)


@keel.workflow(name="acc.parent")
async def parent(x: int, gate: str) -> list[int]:
    v = await before_child(x)
    handle = await keel.start_child(kid, v, gate)
    w = await after_child(v, gate)  # starts only once the child_started write committed
    return [v, w, await handle.result()]


# --- continue-as-new: three generations, one of them gated (SIGKILL around the switch) ----


@keel.step(name="acc.generation")
def generation_step(generation: int, gate: str) -> int:
    record()
    if gate:
        wait_gate(gate)
        record("end")
    return generation * 10


@keel.workflow(name="acc.chain")
async def chain(generation: int, gates: list[str], total: int = 0) -> int:
    """Adds 0, 10, 20 over three runs of one chain; step of run ``n`` waits for ``gates[n]``."""
    total += await generation_step(generation, gates[generation])
    if generation < 2:
        keel.continue_as_new(generation + 1, gates, total=total)
    return total
