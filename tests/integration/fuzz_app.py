"""Workflows for the client fuzz test, imported by its ``keel worker`` subprocess too."""

from __future__ import annotations

from typing import Any

import keel

STOP = {"__fuzz_stop__": "a sentinel no fuzzed payload equals"}


@keel.workflow(name="fuzz.echo")
async def echo(value: Any) -> Any:
    return value


@keel.workflow(name="fuzz.collector")
async def collector() -> list[Any]:
    """Every payload of signal ``p``, in order, until :data:`STOP` arrives."""
    received: list[Any] = []
    while (payload := await keel.wait_for_signal("p")) != STOP:
        received.append(payload)
    return received


@keel.step
async def fuzz_add(a: int, b: int) -> int:
    return a + b


@keel.workflow(name="fuzz.ordinary")
async def ordinary(n: int) -> int:
    return await fuzz_add(n, 1)
