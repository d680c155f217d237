"""Client.signal with a delivery id delivers once; a run being cancelled refuses
signals clearly. On every backend, with a real worker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import keel
from tests.integration._support import wait_state


@keel.workflow(name="delivery_two_signals")
async def two_signals() -> list[str]:
    first = await keel.wait_for_signal("go", type=str)
    second = await keel.wait_for_signal("go", type=str)
    return [first, second]


async def test_a_repeated_delivery_id_is_delivered_once(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(two_signals)
        assert await client.signal(run.run_id, "go", "a", delivery_id="d1") is True
        assert await client.signal(run.run_id, "go", "a again", delivery_id="d1") is False
        assert await client.signal(run.run_id, "go", "b", delivery_id="d2") is True
        assert await run.result(timeout=10) == ["a", "b"]
        # A retry after the run ended is still a no-op, not an error.
        assert await client.signal(run.run_id, "go", "a", delivery_id="d1") is False
        with pytest.raises(keel.RunFinishedError):
            await client.signal(run.run_id, "go", "c", delivery_id="d3")


async def test_a_bad_delivery_id_is_refused(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(two_signals)
        for bad in ("", "x" * 201):
            with pytest.raises(keel.ConfigurationError, match="delivery_id"):
                await client.signal(run.run_id, "go", "a", delivery_id=bad)
        with pytest.raises(TypeError, match="delivery_id must be a str, not int"):
            await client.signal(run.run_id, "go", "a", delivery_id=7)  # type: ignore[arg-type]
        assert await client.store.mailbox.next(run.run_id, "go") is None  # nothing stored
        await client.cancel(run.run_id)


async def test_a_signal_to_a_run_being_cancelled_is_refused(
    env: Any, make_store: Callable[[], Any]
) -> None:
    async with env() as (client, _):
        run = await client.start(two_signals, run_id="c1")
        await wait_state(client, run.run_id, keel.RunState.SUSPENDED)
    # No worker now: the request stays pending.
    async with keel.Client(make_store()) as client:
        assert await client.cancel("c1") is keel.RunState.SUSPENDED
        with pytest.raises(keel.RunCancellingError, match="'c1': it is being cancelled"):
            await client.signal("c1", "go", "late")
        with pytest.raises(keel.RunCancellingError):
            await client.signal("c1", "go", "late", delivery_id="x")
        history = await client.history("c1")
        assert [e.type for e in history] == ["run_started", "signal_awaited"]
    async with env() as (client, _):
        with pytest.raises(keel.RunCancelledError):
            await client.result("c1", timeout=10)
