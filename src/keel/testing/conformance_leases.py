"""Conformance tests for lease fencing and renewal (mixed into StoreConformance)."""

from __future__ import annotations

import pytest

from keel.core.states import RunState
from keel.errors import LeaseLostError
from keel.store.base import Lease, Store
from keel.testing.conformance_helpers import (
    CANCELLED,
    StoreFactory,
    event,
    expired_lease,
    finished,
    get,
    leased,
    run_with_store,
    suspended,
)


class LeaseConformance:
    """Every backend fences stale leases and renews live ones."""

    # -- fencing ---------------------------------------------------------------------

    def test_stale_append_is_rejected_and_changes_nothing(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            old = await expired_lease(store, "r1")
            sid = await store.send_signal("r1", "go", b"1")
            [claimed] = await store.claim_runs("w2", limit=1, ttl=30)
            before = await get(store, "r1")
            with pytest.raises(LeaseLostError) as info:
                await store.append_events(old, 1, [event(1)], consume_signal=sid)
            assert info.value.run_id == "r1" and info.value.token == old.token
            assert len(await store.load_events("r1")) == 1
            assert await get(store, "r1") == before
            signal = await store.next_signal("r1", "go")
            assert signal is not None and signal.id == sid  # not consumed
            await store.append_events(claimed.lease, 1, [event(1)], consume_signal=sid)
            assert await store.next_signal("r1", "go") is None

        run_with_store(store_factory, body)

    def test_expired_lease_cannot_write_before_anyone_reclaims(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            lease = await expired_lease(store, "r1")
            before = await get(store, "r1")
            with pytest.raises(LeaseLostError):
                await store.append_events(lease, 1, [event(1)])
            with pytest.raises(LeaseLostError):
                await store.suspend_run(lease, 1, [event(1)], wake_at=None)
            with pytest.raises(LeaseLostError):
                await store.finish_run(lease, 1, [], state=RunState.COMPLETED)
            assert await get(store, "r1") == before
            assert len(await store.load_events("r1")) == 1

        run_with_store(store_factory, body)

    def test_foreign_owner_or_token_cannot_write(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "r1", "w1")
            forged = [
                Lease("r1", "w2", lease.token, lease.expires_at),
                Lease("r1", "w1", lease.token + 1, lease.expires_at),
                Lease("r1", "w1", lease.token - 1, lease.expires_at),
                Lease("missing", "w1", lease.token, lease.expires_at),
            ]
            for bad in forged:
                with pytest.raises(LeaseLostError):
                    await store.append_events(bad, 1, [event(1)])
            assert len(await store.load_events("r1")) == 1
            assert (await get(store, "r1")).next_seq == 1

        run_with_store(store_factory, body)

    def test_stale_suspend_is_rejected_and_changes_nothing(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            old = await expired_lease(store, "r1")
            await store.claim_runs("w2", limit=1, ttl=30)
            before = await get(store, "r1")
            with pytest.raises(LeaseLostError):
                await store.suspend_run(old, 1, [event(1)], wake_at=await store.now() + 60)
            assert await get(store, "r1") == before
            assert before.state is RunState.RUNNING and before.lease_owner == "w2"
            assert len(await store.load_events("r1")) == 1

        run_with_store(store_factory, body)

    def test_stale_finish_is_rejected_and_changes_nothing(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            old = await expired_lease(store, "r1")
            await store.claim_runs("w2", limit=1, ttl=30)
            before = await get(store, "r1")
            with pytest.raises(LeaseLostError):
                await store.finish_run(
                    old, 1, [event(1, "run_completed")], state=RunState.COMPLETED, result=b"1"
                )
            assert await get(store, "r1") == before
            assert len(await store.load_events("r1")) == 1

        run_with_store(store_factory, body)

    def test_lease_dies_with_suspend_and_finish(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            lease = await suspended(store, "r1", None)
            with pytest.raises(LeaseLostError):
                await store.append_events(lease, 1, [event(1)])
            done = await finished(store, "r2")
            with pytest.raises(LeaseLostError):
                await store.append_events(done, 1, [event(1)])
            with pytest.raises(LeaseLostError):
                await store.finish_run(done, 1, [], state=RunState.FAILED, error=b"x")
            assert (await get(store, "r2")).state is RunState.COMPLETED

        run_with_store(store_factory, body)

    # -- renewals --------------------------------------------------------------------

    def test_renew_extends_held_leases_and_reports_lost(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            held = await leased(store, "held", "w1", ttl=5)
            other = await leased(store, "other", "w2")
            done = await finished(store, "done")
            stale = await expired_lease(store, "stale", "w1")
            await store.claim_runs("w3", limit=10, ttl=30)  # takes "stale"
            expired = await expired_lease(store, "expired", "w1")
            before = await store.now()
            outcome = await store.renew_leases("w1", [held, other, done, stale, expired], 40)
            assert outcome.lost == {"other", "done", "stale", "expired"}
            assert outcome.cancel_requested == frozenset()
            assert before + 40 <= outcome.expires_at <= await store.now() + 40
            assert (await get(store, "held")).lease_expires_at == outcome.expires_at
            assert (await get(store, "other")).lease_expires_at == other.expires_at
            assert (await get(store, "expired")).lease_expires_at == expired.expires_at
            renewed = Lease("held", "w1", held.token, outcome.expires_at)
            await store.append_events(renewed, 1, [event(1)])
            assert (await store.renew_leases("w1", [], 10)).lost == frozenset()

        run_with_store(store_factory, body)

    def test_renew_reports_cancel_requests(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            a = await leased(store, "a")
            b = await leased(store, "b")
            assert await store.request_cancel("a", CANCELLED) is RunState.RUNNING
            outcome = await store.renew_leases("w1", [a, b], 30)
            assert outcome.cancel_requested == {"a"} and outcome.lost == frozenset()

        run_with_store(store_factory, body)
