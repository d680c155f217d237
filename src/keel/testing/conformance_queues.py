"""Conformance tests for cluster-wide queue limits (mixed into StoreConformance)."""

from __future__ import annotations

import asyncio

import pytest

from keel.errors import ConfigurationError
from keel.store.base import QueueInfo
from keel.store.ports import Store
from keel.testing.conformance_helpers import StoreFactory, run_with_store
from keel.testing.conformance_tasks import dispatched, new_task


class QueueLimitConformance:
    """A queue's limit caps its leased tasks over every claimer, on every backend."""

    def test_set_and_list_queue_limits(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            assert await store.tasks.list_queues() == []
            await store.tasks.set_limit("gpu", 2)
            await store.tasks.set_limit("gpu", 3)  # replaces
            await store.tasks.set_limit("io", 1)
            await dispatched(store, "r1", [new_task("step:a#0", queue="cpu")])
            await store.tasks.claim("t1", ["gpu"], limit=1, ttl=30)  # nothing due
            assert await store.tasks.list_queues() == [
                QueueInfo("cpu", None, 1, 0),
                QueueInfo("gpu", 3, 0, 0),
                QueueInfo("io", 1, 0, 0),
            ]
            await store.tasks.claim("t1", ["cpu"], limit=1, ttl=30)
            await store.tasks.set_limit("io", None)
            await store.tasks.set_limit("never-set", None)  # removing no limit is fine
            assert await store.tasks.list_queues() == [
                QueueInfo("cpu", None, 0, 1),
                QueueInfo("gpu", 3, 0, 0),
            ]

        run_with_store(store_factory, body)

    @pytest.mark.parametrize(
        ("queue", "limit"),
        [("", 1), ("a#b", 1), ("x" * 201, 1), ("q", -1), ("q", True), ("q", 1.5)],
    )
    def test_bad_queue_limits_are_refused_and_write_nothing(
        self, store_factory: StoreFactory, queue: str, limit: int
    ) -> None:
        async def body(store: Store) -> None:
            with pytest.raises(ConfigurationError):
                await store.tasks.set_limit(queue, limit)
            assert await store.tasks.list_queues() == []

        run_with_store(store_factory, body)

    def test_claims_never_lease_more_than_the_limit(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await store.tasks.set_limit("q", 2)
            await dispatched(store, "r1", [new_task(f"step:s#{i}") for i in range(5)])
            first = await store.tasks.claim("t1", ["q"], limit=10, ttl=30)
            assert [t.command for _, t in first] == ["step:s#0", "step:s#1"]
            assert await store.tasks.claim("t2", ["q"], limit=10, ttl=30) == []
            await store.tasks.complete(first[0][0], b'"done"')
            [(_, again)] = await store.tasks.claim("t2", ["q"], limit=10, ttl=30)
            assert again.command == "step:s#2"
            # Raising the limit lets claimers take more; leases held are kept.
            await store.tasks.set_limit("q", 4)
            more = await store.tasks.claim("t3", ["q"], limit=10, ttl=30)
            assert [t.command for _, t in more] == ["step:s#3", "step:s#4"]
            [info] = await store.tasks.list_queues()
            assert info == QueueInfo("q", 4, 0, 4)

        run_with_store(store_factory, body)

    def test_a_limit_of_zero_pauses_the_queue(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await dispatched(store, "r1", [new_task(f"step:s#{i}") for i in range(3)])
            [(held, _)] = await store.tasks.claim("t1", ["q"], limit=1, ttl=30)
            await store.tasks.set_limit("q", 0)
            assert await store.tasks.claim("t1", ["q"], limit=10, ttl=30) == []
            assert await store.tasks.list_queues() == [QueueInfo("q", 0, 2, 1)]
            await store.tasks.complete(held, b'"done"')  # a task already running finishes
            assert await store.tasks.claim("t2", ["q"], limit=10, ttl=30) == []
            await store.tasks.set_limit("q", None)  # resumed
            resumed = await store.tasks.claim("t2", ["q"], limit=10, ttl=30)
            assert [t.command for _, t in resumed] == ["step:s#1", "step:s#2"]

        run_with_store(store_factory, body)

    def test_a_full_queue_does_not_crowd_out_the_others(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await store.tasks.set_limit("gpu", 1)
            gpu = [new_task(f"step:g#{i}", queue="gpu", priority=9) for i in range(6)]
            cpu = [new_task(f"step:c#{i}", queue="cpu") for i in range(3)]
            await dispatched(store, "r1", gpu + cpu)
            # The high-priority gpu tasks come first, but only one fits (a
            # backend may fill the rest of this claim with cpu tasks, or not).
            first = await store.tasks.claim("t1", ["gpu", "cpu"], limit=3, ttl=30)
            assert first[0][1].command == "step:g#0"
            assert [t.queue for _, t in first[1:]] == ["cpu"] * (len(first) - 1)
            # Now gpu is full: claims of both queues get the cpu tasks, not nothing.
            second = await store.tasks.claim("t1", ["gpu", "cpu"], limit=3, ttl=30)
            cpu_claimed = [t.command for _, t in first[1:] + second]
            assert cpu_claimed == ["step:c#0", "step:c#1", "step:c#2"]

        run_with_store(store_factory, body)

    def test_concurrent_claimers_share_the_limit(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            limit = 3
            await store.tasks.set_limit("q", limit)
            await dispatched(store, "r1", [new_task(f"step:s#{i}") for i in range(30)])
            leased_max = 0
            total, completed = 30, 0
            deadline = asyncio.get_running_loop().time() + 60

            async def claimer(owner: str) -> int:
                # Claim, hold briefly, complete, until every task is done: the
                # store must keep the count of leased tasks at or under the
                # limit throughout. (A fixed number of rounds is not enough on
                # a loaded machine: a claimer may spin while others hold the room.)
                nonlocal leased_max, completed
                done = 0
                while completed < total:
                    assert asyncio.get_running_loop().time() < deadline, "claimers stalled"
                    claimed = await store.tasks.claim(owner, ["q"], limit=2, ttl=30)
                    queues = await store.tasks.list_queues()
                    leased_max = max(leased_max, *(q.leased for q in queues))
                    for lease, _ in claimed:
                        await store.tasks.complete(lease, b'"ok"')
                        done += 1
                        completed += 1
                    if not claimed:
                        await asyncio.sleep(0.001)  # let the holders complete
                return done

            results = await asyncio.gather(*(claimer(f"t{i}") for i in range(6)))
            assert sum(results) == 30
            assert 1 <= leased_max <= limit

        run_with_store(store_factory, body)
