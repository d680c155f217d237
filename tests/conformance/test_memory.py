"""The in-memory store passes the store conformance suite."""

from __future__ import annotations

import asyncio

import pytest

from keel.store import MemoryStore, NewEvent, NewRun
from keel.store.ports import Suspend, Turn
from keel.testing.conformance import ClockedStoreFactory, StoreConformance, StoreFactory


class TestMemoryStore(StoreConformance):
    @pytest.fixture
    def store_factory(self) -> StoreFactory:
        return MemoryStore

    @pytest.fixture
    def clocked_store_factory(self) -> ClockedStoreFactory:
        return lambda clock: MemoryStore(clock=clock)


def test_injected_clock_drives_wake_ups_and_leases() -> None:
    now = [1000.0]
    store = MemoryStore(clock=lambda: now[0])

    async def main() -> None:
        await store.open()
        started = NewEvent("run_started", None, b"{}")
        run, _, _ = await store.runs.create(NewRun("r1", "wf", "v1", b"{}", started))
        assert run.created_at == 1000.0 and await store.now() == 1000.0
        [claimed] = await store.runs.claim("w1", limit=1, ttl=10)
        assert claimed.lease.expires_at == 1010.0
        await store.runs.commit(claimed.lease, Turn(1, [], end=Suspend(1100.0)))
        assert await store.runs.claim("w1", limit=1, ttl=10) == []
        now[0] = 1100.0
        [again] = await store.runs.claim("w2", limit=1, ttl=10)
        assert again.lease.token == claimed.lease.token + 1
        now[0] = 1110.5  # past the lease: another worker may take over
        [taken] = await store.runs.claim("w3", limit=1, ttl=10)
        assert taken.lease.token == again.lease.token + 1
        await store.close()

    asyncio.run(main())
