"""Conformance tests for child runs (mixed into StoreConformance)."""

from __future__ import annotations

import pytest

from keel.core.states import RunState
from keel.errors import LeaseLostError, RunExistsError
from keel.store.ports import Finish, Store, Suspend, Turn
from keel.testing.conformance_helpers import (
    CANCELLED,
    StoreFactory,
    child_run,
    claim_ids,
    event,
    get,
    leased,
    new_run,
    run_with_store,
    started,
)


class ChildConformance:
    """Every backend creates child runs with the parent's journal write, wakes the
    parent when a child ends and cascades cancellation to children."""

    def test_start_children_appends_and_creates_in_one_write(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "p")
            children = [child_run("p/a", "p"), child_run("p/b", "p", "wait", depth=1)]
            await store.runs.commit(lease, Turn(1, [started(0), started(1)], children=children))
            parent = await get(store, "p")
            assert parent.next_seq == 3 and parent.parent_run_id is None and parent.depth == 0
            assert [e.type for e in await store.reads.history("p")] == [
                "run_started",
                "child_started",
                "child_started",
            ]
            a = await get(store, "p/a")
            assert (a.state, a.parent_run_id, a.parent_close, a.depth) == (
                RunState.PENDING,
                "p",
                "cancel",
                1,
            )
            assert a.wake_at is not None and a.input == b'{"child":"p/a"}' and a.next_seq == 1
            assert [e.data for e in await store.reads.history("p/a")] == [b'{"child":"p/a"}']
            assert (await get(store, "p/b")).parent_close == "wait"
            claimed = {c.run.run_id: c.run for c in await store.runs.claim("w", limit=5, ttl=30)}
            assert sorted(claimed) == ["p/a", "p/b"]
            # The claimed record carries the family too.
            assert (claimed["p/b"].parent_run_id, claimed["p/b"].depth) == ("p", 1)

        run_with_store(store_factory, body)

    def test_a_taken_child_id_writes_nothing(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await store.runs.create(new_run("taken"))
            lease = await leased(store, "p")
            with pytest.raises(RunExistsError) as info:
                await store.runs.commit(
                    lease,
                    Turn(
                        1,
                        [started(0), started(1)],
                        children=[child_run("fresh", "p"), child_run("taken", "p")],
                    ),
                )
            assert info.value.run_ids == ["taken"]
            assert (await get(store, "p")).next_seq == 1
            assert await store.reads.get_run("fresh") is None
            assert [e.seq for e in await store.reads.history("p")] == [0]
            twins = [child_run("twin", "p"), child_run("twin", "p")]
            with pytest.raises(RunExistsError):
                await store.runs.commit(lease, Turn(1, [started(0), started(1)], children=twins))
            assert await store.reads.get_run("twin") is None
            # The lease is still good: the parent goes on.
            await store.runs.commit(lease, Turn(1, [event(1)]))

        run_with_store(store_factory, body)

    def test_start_children_is_fenced(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "p")
            await store.runs.request_cancel("p", CANCELLED)  # now cancel-requested, still held
            stale = type(lease)(lease.run_id, lease.owner, lease.token + 1, lease.expires_at)
            with pytest.raises(LeaseLostError):
                await store.runs.commit(
                    stale, Turn(1, [started(0)], children=[child_run("p/a", "p")])
                )
            assert await store.reads.get_run("p/a") is None
            assert (await get(store, "p")).next_seq == 1

        run_with_store(store_factory, body)

    def test_a_child_ending_wakes_its_parent(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "p")
            await store.runs.commit(
                lease, Turn(1, [started(0)], children=[child_run("p/a", "p", "abandon")])
            )
            await store.runs.commit(lease, Turn(2, [], end=Suspend(None, wake_on_children=["p/a"])))
            assert (await get(store, "p")).wake_at is None
            [claimed] = await store.runs.claim("w2", limit=1, ttl=30)
            assert claimed.run.run_id == "p/a" and claimed.run.parent_run_id == "p"
            await store.runs.commit(
                claimed.lease, Turn(1, [], end=Finish(RunState.FAILED, error=b"{}"))
            )
            parent = await get(store, "p")
            assert parent.state is RunState.SUSPENDED and parent.wake_at is not None
            assert await claim_ids(store) == ["p"]

        run_with_store(store_factory, body)

    def test_suspend_waiting_on_an_ended_child_is_due_at_once(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "p")
            await store.runs.commit(
                lease, Turn(1, [started(0)], children=[child_run("p/a", "p", "abandon")])
            )
            [child] = await store.runs.claim("w2", limit=1, ttl=30)
            # The child ends while the parent still holds its lease.
            await store.runs.commit(
                child.lease, Turn(1, [], end=Finish(RunState.COMPLETED, result=b"1"))
            )
            await store.runs.commit(lease, Turn(2, [], end=Suspend(None, wake_on_children=["p/a"])))
            assert (await get(store, "p")).wake_at is not None
            assert await claim_ids(store) == ["p"]
            other = await leased(store, "q")
            await store.runs.commit(
                other, Turn(1, [], end=Suspend(None, wake_on_children=["missing"]))
            )
            assert (await get(store, "q")).wake_at is None

        run_with_store(store_factory, body)

    def test_a_parent_ending_cancels_its_cancel_children_only(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "p")
            kids = [
                child_run("p/c", "p", "cancel"),
                child_run("p/a", "p", "abandon"),
                child_run("p/w", "p", "wait"),
            ]
            await store.runs.commit(
                lease, Turn(1, [started(0), started(1), started(2)], children=kids)
            )
            await store.runs.commit(lease, Turn(4, [], end=Finish(RunState.COMPLETED, result=b"1")))
            assert (await get(store, "p/c")).cancel_requested
            assert not (await get(store, "p/a")).cancel_requested
            assert not (await get(store, "p/w")).cancel_requested

        run_with_store(store_factory, body)

    def test_cancelling_an_idle_parent_cascades_when_it_ends(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "p")
            kids = [
                child_run("p/c", "p", "cancel"),
                child_run("p/a", "p", "abandon"),
                child_run("p/w", "p", "wait"),
            ]
            await store.runs.commit(
                lease, Turn(1, [started(0), started(1), started(2)], children=kids)
            )
            await store.runs.commit(lease, Turn(4, [], end=Suspend(None)))
            # A child held by a worker gets the request; its holder ends it.
            held = {c.run.run_id: c.lease for c in await store.runs.claim("w2", limit=5, ttl=30)}
            assert sorted(held) == ["p/a", "p/c", "p/w"]
            # The parent has journaled more than its start: the request waits for
            # a worker to deliver it (its cleanup may run), and the cascade comes
            # with the transaction that ends it.
            assert await store.runs.request_cancel("p", CANCELLED) is RunState.SUSPENDED
            assert (await get(store, "p")).cancel_requested
            assert not (await get(store, "p/c")).cancel_requested
            [parent] = await store.runs.claim("w3", limit=1, ttl=30)
            assert parent.run.run_id == "p"
            await store.runs.commit(
                parent.lease, Turn(4, [CANCELLED], end=Finish(RunState.CANCELLED))
            )
            assert (await get(store, "p/c")).cancel_requested
            assert (await get(store, "p/w")).cancel_requested  # a cancelled parent does not wait
            assert not (await get(store, "p/a")).cancel_requested
            renewed = await store.runs.renew("w2", list(held.values()), 30)
            assert renewed.cancel_requested == frozenset({"p/c", "p/w"})
            # An unheld child asked to cancel is due at once, and its end cascades further.
            await store.runs.commit(held["p/c"], Turn(1, [], end=Suspend(None)))
            assert (await get(store, "p/c")).wake_at is not None

        run_with_store(store_factory, body)
