"""A small workflow in several versions, for testing the replay checker.

``define(variant, registry)`` registers ``rc_shop`` (and its steps) as one
version of the code. Runs are recorded with ``"v1"``; the other variants are
the code changes the checker must catch. Every variant defines the same
functions (same module and qualified names), so registering one into a
registry that holds another replaces it, as redeploying a module would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import keel
from keel.store.ports import Store

VARIANTS = ("v1", "reordered", "renamed", "changed_args")


def define(variant: str, registry: keel.Registry) -> keel.WorkflowDef[..., str]:
    """Register ``rc_shop`` as ``variant`` in ``registry`` and return it."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}")

    @keel.step(name="rc_reserve", registry=registry)
    async def reserve(sku: str) -> str:
        return f"R-{sku}"

    @keel.step(name="rc_hold", registry=registry)  # "rc_reserve" under a new name
    async def hold(sku: str) -> str:
        return f"R-{sku}"

    @keel.step(name="rc_charge", registry=registry)
    async def charge(amount: int) -> str:
        return f"C-{amount}"

    @keel.workflow(name="rc_shop", registry=registry)
    async def shop(sku: str, amount: int, wait: bool = False) -> str:
        if variant == "reordered":
            charged = await charge(amount)
            reserved = await reserve(sku)
        elif variant == "renamed":
            reserved = await hold(sku)
            charged = await charge(amount)
        elif variant == "changed_args":
            reserved = await reserve(sku.lower())
            charged = await charge(amount)
        else:
            reserved = await reserve(sku)
            charged = await charge(amount)
        if wait:  # stays in flight until the "go" signal
            await keel.wait_for_signal("go")
        return f"{reserved} {charged}"

    return shop


def define_other(registry: keel.Registry) -> keel.WorkflowDef[..., str]:
    """``rc_other``: a second workflow, absent from the code under check."""

    @keel.workflow(name="rc_other", registry=registry)
    async def other(n: int) -> str:
        return f"other {n}"

    return other


@asynccontextmanager
async def recording(store: Store | str) -> AsyncIterator[keel.Client]:
    """A worker running the v1 code (and ``rc_other``) on ``store``, and its client."""
    registry = keel.Registry()
    define("v1", registry)
    define_other(registry)
    worker = keel.Worker(store, registry=registry, poll_interval=0.05, cache=False)
    async with worker:
        yield keel.Client(worker.store, registry=registry, worker=worker)


async def record(
    client: keel.Client, *, done: int = 2, in_flight: int = 1, other: int = 0
) -> dict[str, list[str]]:
    """Runs of the v1 code: ``done`` completed, ``in_flight`` waiting for a signal,
    ``other`` of ``rc_other``. Returns their run ids by kind, each list oldest first."""
    ids: dict[str, list[str]] = {"done": [], "in_flight": [], "other": []}
    registry = client.registry
    shop = registry.get("rc_shop")
    for i in range(done):
        run = await client.start(shop, f"SKU{i}", 10 + i)
        await run.result(timeout=30)
        ids["done"].append(run.run_id)
    for i in range(in_flight):
        run = await client.start(shop, f"WAIT{i}", 20 + i, wait=True)
        await _until_waiting(client, run.run_id)
        ids["in_flight"].append(run.run_id)
    for i in range(other):
        run = await client.start(registry.get("rc_other"), i)
        await run.result(timeout=30)
        ids["other"].append(run.run_id)
    return ids


async def _until_waiting(client: keel.Client, run_id: str) -> None:
    """Until the run has journaled its wait for "go" and given its lease back."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while (await client.get(run_id)).state is not keel.RunState.SUSPENDED:
        if loop.time() > deadline:
            raise AssertionError(f"run {run_id} never suspended waiting for its signal")
        await client.store.changes.wait(0.2)
