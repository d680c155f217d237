"""Conformance of ``store.changes``: the change feed's latency hints (mixed into
StoreConformance)."""

from __future__ import annotations

import asyncio

from keel.store.ports import Store
from keel.testing.conformance_helpers import (
    StoreFactory,
    new_run,
    run_with_store,
)
from keel.testing.conformance_schedules import new_schedule


class ChangeConformance:
    """Every backend wakes waiters after writes and lets them sleep otherwise."""

    def test_wait_for_change_returns_early_after_a_write(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            loop = asyncio.get_running_loop()
            start = loop.time()
            waiter = asyncio.create_task(store.changes.wait(10))
            await asyncio.sleep(0.05)
            assert not waiter.done()
            await store.runs.create(new_run("r1"))
            await asyncio.wait_for(waiter, 5)
            assert loop.time() - start < 2
            await store.changes.wait(0.05)  # absorb any late notice of that write
            waiter = asyncio.create_task(store.changes.wait(10))
            await asyncio.sleep(0.05)
            start = loop.time()
            await store.mailbox.send("r1", "go", b"1")
            await asyncio.wait_for(waiter, 5)
            assert loop.time() - start < 2

        run_with_store(store_factory, body)

    def test_wait_for_change_waits_while_nothing_changes(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            loop = asyncio.get_running_loop()
            await store.runs.create(new_run("r1"))
            early = 0
            for _ in range(5):
                start = loop.time()
                await store.changes.wait(0.15)
                early += loop.time() - start < 0.12
            # A write may be reported more than once (the hint is allowed to be
            # early), but an idle store must not keep waking its waiters.
            assert early <= 2
            await store.changes.wait(0)

        run_with_store(store_factory, body)

    def test_work_and_schedule_waiters_return_early_after_their_writes(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            work = asyncio.create_task(store.changes.wait_for_work(30))
            await asyncio.sleep(0)  # let it start waiting
            await store.runs.create(new_run("r1"))  # a new run is work
            await asyncio.wait_for(work, 5)
            schedules = asyncio.create_task(store.changes.wait_for_schedules(30))
            await asyncio.sleep(0)
            await store.schedules.create(new_schedule("s1", await store.now() + 3600))
            await asyncio.wait_for(schedules, 5)
            await store.changes.wait_for_work(0)
            await store.changes.wait_for_schedules(0)

        run_with_store(store_factory, body)
