"""Conformance of ``store.runs.request_cancel``: cancel requests (mixed into StoreConformance)."""

from __future__ import annotations

import pytest

from keel.core.states import RunState
from keel.errors import (
    LeaseLostError,
    RunFinishedError,
    RunNotFoundError,
)
from keel.store.ports import Finish, Store, Suspend, Turn
from keel.testing.conformance_helpers import (
    CANCELLED,
    StoreFactory,
    claim_ids,
    event,
    expired_lease,
    finished,
    get,
    leased,
    new_run,
    run_with_store,
    suspended,
    wait_until_past,
)


class CancelConformance:
    """Every backend cancels idle runs at once and asks held or journaled ones."""

    def test_cancel_unleased_run_cancels_at_once(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await store.runs.create(new_run("pending"))
            await suspended(store, "suspended", None)
            for run_id in ("pending", "suspended"):
                next_seq = (await get(store, run_id)).next_seq
                assert await store.runs.request_cancel(run_id, CANCELLED) is RunState.CANCELLED
                run = await get(store, run_id)
                assert run.state is RunState.CANCELLED and run.next_seq == next_seq + 1
                assert run.wake_at is None and run.lease_owner is None
                last = (await store.reads.history(run_id))[-1]
                assert (last.seq, last.type) == (next_seq, "run_cancelled")
            assert await claim_ids(store) == []

        run_with_store(store_factory, body)

    def test_cancel_leased_run_asks_the_holder(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "r1")
            assert await store.runs.request_cancel("r1", CANCELLED) is RunState.RUNNING
            run = await get(store, "r1")
            assert run.cancel_requested and run.state is RunState.RUNNING
            assert run.lease_token == lease.token and len(await store.reads.history("r1")) == 1
            await store.runs.commit(lease, Turn(1, [CANCELLED], end=Finish(RunState.CANCELLED)))
            assert (await get(store, "r1")).state is RunState.CANCELLED

        run_with_store(store_factory, body)

    def test_cancel_requested_run_wakes_when_suspending(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "r1")
            await store.runs.request_cancel("r1", CANCELLED)
            await store.runs.commit(lease, Turn(1, [], end=Suspend(await store.now() + 3600)))
            run = await get(store, "r1")
            assert run.wake_at is not None and run.wake_at <= await store.now()
            [claimed] = await store.runs.claim("w2", limit=1, ttl=30)
            assert claimed.run.cancel_requested

        run_with_store(store_factory, body)

    def test_cancel_with_expired_lease_cancels_at_once(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            stale = await expired_lease(store, "r1")
            assert await store.runs.request_cancel("r1", CANCELLED) is RunState.CANCELLED
            with pytest.raises(LeaseLostError):
                await store.runs.commit(stale, Turn(1, [event(1)]))
            assert [e.type for e in await store.reads.history("r1")] == [
                "run_started",
                "run_cancelled",
            ]
            assert await claim_ids(store) == []

        run_with_store(store_factory, body)

    def test_cancel_run_with_a_journal_asks_the_next_worker(
        self, store_factory: StoreFactory
    ) -> None:
        """Workflow code ran (events beyond run_started): the request is left for
        a worker to deliver, so cleanup can run; nothing is journaled."""

        async def body(store: Store) -> None:
            lease = await leased(store, "sus")
            await store.runs.commit(
                lease, Turn(1, [event(1)], end=Suspend(await store.now() + 3600))
            )
            stale = await leased(store, "exp", ttl=0.5)
            await store.runs.commit(stale, Turn(1, [event(1)]))
            await wait_until_past(store, stale.expires_at)
            await expired_lease(store, "bare")  # nothing journaled: cancelled at once
            assert await store.runs.request_cancel("sus", CANCELLED) is RunState.SUSPENDED
            assert await store.runs.request_cancel("exp", CANCELLED) is RunState.RUNNING
            assert await store.runs.request_cancel("bare", CANCELLED) is RunState.CANCELLED
            for run_id in ("sus", "exp"):
                run = await get(store, run_id)
                assert run.cancel_requested and run.next_seq == 2
                assert [e.type for e in await store.reads.history(run_id)] == [
                    "run_started",
                    "step_completed",
                ]
            now = await store.now()
            assert (await get(store, "sus")).wake_at <= now  # type: ignore[operator]
            claimed = await store.runs.claim("w2", limit=10, ttl=30)
            assert {c.run.run_id for c in claimed} == {"sus", "exp"}
            assert all(c.run.cancel_requested for c in claimed)
            with pytest.raises(LeaseLostError):
                await store.runs.commit(stale, Turn(2, [event(2)]))

        run_with_store(store_factory, body)

    def test_delivered_cancel_request_does_not_wake_a_suspending_run(
        self, store_factory: StoreFactory
    ) -> None:
        """Cleanup code that sleeps: the request it already got must not make
        the run due at once; a new request does."""

        async def body(store: Store) -> None:
            lease = await leased(store, "r1")
            await store.runs.request_cancel("r1", CANCELLED)
            later = await store.now() + 3600
            await store.runs.commit(
                lease, Turn(1, [event(1)], end=Suspend(later, cancel_delivered=True))
            )
            run = await get(store, "r1")
            assert run.wake_at == later and run.cancel_requested
            assert await claim_ids(store) == []
            assert await store.runs.request_cancel("r1", CANCELLED) is RunState.SUSPENDED
            assert await claim_ids(store) == ["r1"]

        run_with_store(store_factory, body)

    def test_cancel_unknown_or_finished_run_is_refused(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            with pytest.raises(RunNotFoundError):
                await store.runs.request_cancel("missing", CANCELLED)
            await finished(store, "done")
            with pytest.raises(RunFinishedError):
                await store.runs.request_cancel("done", CANCELLED)
            await store.runs.create(new_run("c"))
            await store.runs.request_cancel("c", CANCELLED)
            with pytest.raises(RunFinishedError) as info:
                await store.runs.request_cancel("c", CANCELLED)
            assert info.value.state == "cancelled"
            assert len(await store.reads.history("c")) == 2

        run_with_store(store_factory, body)
