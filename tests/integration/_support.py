"""Evidence and waits shared by the cancellation and saga integration tests:
step bodies note each execution; tests wait for conditions, never for luck."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

import keel

calls: Counter[str] = Counter()
order: list[str] = []
_lock = threading.Lock()
gate = threading.Event()  # lets a blocked step body go on
started = threading.Event()  # a blocking step body has started


def note(name: str) -> None:
    with _lock:
        calls[name] += 1
        order.append(name)


def reset() -> None:
    calls.clear()
    order.clear()
    gate.clear()
    started.clear()


async def wait_event(event: threading.Event, what: str, timeout: float = 10.0) -> None:
    if not await asyncio.to_thread(event.wait, timeout):
        pytest.fail(f"timed out waiting for {what}")


async def wait_until(probe: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def wait_state(client: keel.Client, run_id: str, state: keel.RunState) -> None:
    async def probe() -> bool:
        return (await client.get(run_id)).state is state

    await wait_until(probe, f"run {run_id} to be {state}")


def journal(history: list[keel.HistoryEvent]) -> list[tuple[str, str | None]]:
    return [(e.type, e.command) for e in history]


def crash(worker: keel.Worker) -> None:
    """Like kill -9, in-process: stop claiming and heartbeats, and abandon the
    runs it holds without releasing their leases (they must expire)."""
    for task in worker._tasks:
        task.cancel()
    for driver in list(worker._drivers.values()):
        driver.lease_lost()
