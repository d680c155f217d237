"""Cross-run idempotency keys, a worker re-claiming a run it still drives, and a
worker stopping in the middle of a claim."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest

import keel
from keel.store import MemoryStore

executions: Counter[str] = Counter()


@keel.step(name="keys.charge", idempotency_key=lambda order_id, amount: f"charge-{order_id}")
def charge(order_id: str, amount: int) -> str:
    executions[order_id] += 1
    return f"charged {amount} for {order_id} (#{executions[order_id]})"


@keel.workflow
async def pay(order_id: str, amount: int) -> str:
    return str(await charge(order_id, amount))


@keel.step(name="keys.ship")
def ship(order_id: str) -> str:
    executions[f"ship-{order_id}"] += 1
    return f"shipped {order_id}"


@keel.workflow
async def ship_once(order_id: str) -> str:
    return str(await ship.options(idempotency_key=f"ship-{order_id}")(order_id))


@pytest.fixture(autouse=True)
def _reset() -> None:
    executions.clear()


async def test_idempotency_key_reuses_result_across_runs(env: Any) -> None:
    async with env() as (client, _):
        first = await (await client.start(pay, "o-1", 10)).result(timeout=10)
        second_run = await client.start(pay, "o-1", 99)
        second = await second_run.result(timeout=10)
        other = await (await client.start(pay, "o-2", 5)).result(timeout=10)
        history = await client.history(second_run.run_id)
    assert first == second == "charged 10 for o-1 (#1)"  # the body ran once for o-1
    assert other == "charged 5 for o-2 (#1)"
    assert executions == {"o-1": 1, "o-2": 1}
    completed = [e for e in history if e.type == "step_completed"]
    assert completed[0].data["reused"] is True
    assert completed[0].data["idempotency_key"] == "charge-o-1"


async def test_call_site_idempotency_key(env: Any) -> None:
    async with env() as (client, _):
        results = [await (await client.start(ship_once, "o-9")).result(timeout=10) for _ in "ab"]
    assert results == ["shipped o-9", "shipped o-9"]
    assert executions["ship-o-9"] == 1


def test_bad_idempotency_keys_are_call_site_errors() -> None:
    with pytest.raises(keel.ConfigurationError):
        keel.step(idempotency_key="fixed")(lambda: None)  # type: ignore[arg-type]
    with pytest.raises(keel.ConfigurationError):
        ship.options(idempotency_key="")


gates: dict[str, asyncio.Event] = {}  # made per test: an Event binds to one loop
started: Counter[str] = Counter()


@keel.step
async def blocked(run: str) -> str:
    started[run] += 1
    await gates[run].wait()
    return "done"


@keel.workflow
async def waits_for_gate(run: str) -> str:
    return str(await blocked(run))


async def test_worker_adopts_a_run_it_reclaims_while_driving_it(env: Any) -> None:
    gates["r"] = gate = asyncio.Event()
    started.clear()
    async with env(lease_ttl=0.3) as (client, worker):
        worker._tasks[1].cancel()  # stall heartbeats: our own lease will expire
        run = await client.start(waits_for_gate, "r")
        deadline = time.monotonic() + 10
        while (await worker.store.reads.get_run(run.run_id)).lease_token < 2:  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the run was never re-claimed"
            await asyncio.sleep(0.02)
        assert worker.active_runs == [run.run_id]
        gate.set()
        assert await run.result(timeout=10) == "done"
    assert started["r"] == 1  # the re-claim did not start the step again


class _SlowClaims(MemoryStore):
    """A memory store whose claims wait for a gate, so a stop can begin mid-claim."""

    def __init__(self) -> None:
        super().__init__()
        self.claiming = asyncio.Event()
        self.gate = asyncio.Event()
        self.runs = _SlowClaimRuns(self, self.runs)


class _SlowClaimRuns:
    def __init__(self, store: _SlowClaims, inner: Any) -> None:
        self._store = store
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def claim(self, owner: str, *, limit: int, ttl: float, versions: Any = None) -> list[Any]:
        claimed = await self._inner.claim(owner, limit=limit, ttl=ttl, versions=versions)
        if claimed:
            self._store.claiming.set()
            await self._store.gate.wait()
        return claimed


async def test_a_run_claimed_while_the_worker_stops_is_handed_back() -> None:
    # A run that becomes due just as a worker stops (a schedule's tick, say) may be
    # claimed by its last claim: it must be released, not stay leased until expiry.
    store = _SlowClaims()
    worker = keel.Worker(store, poll_interval=0.05, cache=False, lease_ttl=30.0)
    await worker.start()
    run = await keel.Client(store).start(ship_once, "late")  # not local: claimed
    await asyncio.wait_for(store.claiming.wait(), 10)
    stopping = asyncio.create_task(worker.stop())
    await asyncio.sleep(0)  # stop() runs up to its first await: draining is set
    assert worker.draining
    store.gate.set()
    await asyncio.wait_for(stopping, 10)
    await store.open()  # stop() closed it; the data stays
    after = await store.reads.get_run(run.run_id)
    assert after is not None and after.state is keel.RunState.SUSPENDED
    assert after.lease_owner is None and after.wake_at is not None
    assert after.wake_at <= await store.now()  # due at once for another worker
