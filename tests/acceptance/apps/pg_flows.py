"""Workflows for the PostgreSQL acceptance tests (``accpg.`` names).

Step bodies log ``start`` and ``end`` lines with a ``time.time()`` stamp (see
``stamp``), so tests can check that no two executions of one run overlapped,
and return or log the worker's pid, so tests can tell which worker's result
the journal kept.
"""

from __future__ import annotations

import asyncio
import os
import random
import time

import keel
from tests.acceptance.apps._record import LOG_NAME, acc_dir, wait_gate


def stamp(phase: str) -> None:
    """Log ``<run_id> <step> <attempt> <pid> <phase> <time.time()>`` in one append."""
    info = keel.current_step()
    assert info is not None, "stamp() must be called from a step body"
    line = f"{info.run_id} {info.step} {info.attempt} {os.getpid()} {phase} {time.time():.6f}\n"
    fd = os.open(acc_dir() / LOG_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _work(pause_ms: int) -> None:
    stamp("start")
    time.sleep(random.uniform(0, pause_ms) / 1000)


# --- a chain of up to four short steps, the second one optionally gated -----------------


@keel.step(name="accpg.c1")
def c1(x: int, pause_ms: int) -> int:
    _work(pause_ms)
    stamp("end")
    return x * 10


@keel.step(name="accpg.c2")
def c2(x: int, gate: str, pause_ms: int) -> int:
    _work(pause_ms)
    if gate:
        wait_gate(gate)
    stamp("end")
    return x + 1


@keel.step(name="accpg.c3")
def c3(x: int, pause_ms: int) -> int:
    _work(pause_ms)
    stamp("end")
    return x * 3


@keel.step(name="accpg.c4")
def c4(x: int, pause_ms: int) -> int:
    _work(pause_ms)
    stamp("end")
    return x - 7


CHAIN = ["accpg.c1", "accpg.c2", "accpg.c3", "accpg.c4"]


@keel.workflow(name="accpg.chain")
async def chain(i: int, steps: int = 3, gate: str = "", pause_ms: int = 0) -> int:
    """``steps`` (1-4) of c1..c4 in order; each pauses up to ``pause_ms``;
    with a ``gate``, c2 waits for it."""
    v = await c1(i, pause_ms)
    if steps >= 2:
        v = await c2(v, gate, pause_ms)
    if steps >= 3:
        v = await c3(v, pause_ms)
    if steps >= 4:
        v = await c4(v, pause_ms)
    return int(v)


def chain_expected(i: int, steps: int = 3) -> int:
    v = i * 10
    for k, op in enumerate((lambda x: x + 1, lambda x: x * 3, lambda x: x - 7), start=2):
        if steps >= k:
            v = op(v)
    return v


# --- a step that blocks on a per-process gate (lease steal) -------------------------------


@keel.step(name="accpg.held")
def held(gate: str) -> int:
    """Blocks until the test opens ``gate-<gate>-<pid>``; returns the pid that ran it."""
    stamp("start")
    wait_gate(f"{gate}-{os.getpid()}")
    stamp("end")
    return os.getpid()


@keel.step(name="accpg.after")
def after(held_by: int) -> list[int]:
    stamp("start")
    stamp("end")
    return [held_by, os.getpid()]


@keel.workflow(name="accpg.steal")
async def steal(gate: str) -> dict[str, int]:
    held_by = await held(gate)
    pids = await after(held_by)
    return {"held_by": pids[0], "after_by": pids[1]}


# --- dispatched steps: frames rendered by the workers serving queue "render" ----------------


@keel.step(name="accpg.render", queue="render")
def render(run: int, frame: int, pause_ms: int, gate: str) -> str:
    """A dispatched step; with a ``gate``, frame 0 waits for ``gate-<gate>-<pid>``."""
    _work(pause_ms)
    if gate and frame == 0:
        wait_gate(f"{gate}-{os.getpid()}")
    stamp("end")
    return f"{run}.{frame}@{os.getpid()}"


@keel.workflow(name="accpg.film")
async def film(run: int, frames: int, pause_ms: int = 0, gate: str = "") -> list[str]:
    """Render ``frames`` frames at once on the render queue; c1 runs locally first."""
    base = await c1(run, 0)
    return list(await asyncio.gather(*(render(base, f, pause_ms, gate) for f in range(frames))))
