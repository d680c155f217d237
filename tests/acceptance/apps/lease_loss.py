"""Workflows for the lost-lease (SIGSTOP) and drain-timeout scenarios.

Step bodies leave ``start`` / ``end`` / ``cancelled`` lines in the execution
log, so a test sees from outside the engine whether a body ran to its end.
"""

from __future__ import annotations

import asyncio
import time

import keel
from tests.acceptance.apps._record import acc_dir, record


@keel.step(name="acc.ll.nap")
async def nap(seconds: float) -> str:
    """An async step: one timer, then the side effect ``end``."""
    record()
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        record("cancelled")
        raise
    record("end")
    return "nap done"


@keel.workflow(name="acc.ll.async_flow")
async def async_flow(seconds: float) -> str:
    return str(await nap(seconds))


@keel.step(name="acc.ll.wait_gate")
async def wait_gate(gate: str) -> str:
    """An async step resumed every 10 ms (sooner than any heartbeat) until the gate opens."""
    record()
    path = acc_dir() / f"gate-{gate}"
    try:
        while not path.exists():  # noqa: ASYNC110 -- a file has no event to await
            await asyncio.sleep(0.01)
    except asyncio.CancelledError:
        record("cancelled")
        raise
    record("end")
    return "gate passed"


@keel.workflow(name="acc.ll.gate_flow")
async def gate_flow(gate: str) -> str:
    return str(await wait_gate(gate))


@keel.step(name="acc.ll.poll")
def poll(gate: str) -> str:
    """A sync step that stops when told (cancel_requested) or goes on at the gate."""
    record()
    path = acc_dir() / f"gate-{gate}"
    deadline = time.monotonic() + 60.0
    while not path.exists() and time.monotonic() < deadline:
        if keel.cancel_requested():
            record("cancelled")
            return "cancelled"
        time.sleep(0.01)
    record("end")
    return "poll done"


@keel.workflow(name="acc.ll.sync_flow")
async def sync_flow(gate: str) -> str:
    return str(await poll(gate))


@keel.step(name="acc.ll.block")
def block(seconds: float) -> str:
    """A sync step that ignores cancellation: sleeps, then writes ``end``."""
    record()
    time.sleep(seconds)
    record("end")
    return "block done"


@keel.workflow(name="acc.ll.block_flow")
async def block_flow(seconds: float) -> str:
    return str(await block(seconds))
