"""Conformance tests for signals, cancellation and change notifications
(mixed into StoreConformance)."""

from __future__ import annotations

import asyncio

import pytest

from keel.core.states import RunState
from keel.errors import (
    LeaseLostError,
    RunCancellingError,
    RunFinishedError,
    RunNotFoundError,
    StoreError,
)
from keel.store.base import NewEvent, NewRun, Store
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


class SignalConformance:
    """Every backend buffers signals, cancels runs and reports changes."""

    # -- signals ---------------------------------------------------------------------

    def test_signals_are_buffered_and_fifo_per_name(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await store.create_run(new_run("r1"))
            await store.create_run(new_run("r2"))
            a1 = await store.send_signal("r1", "a", b"1")
            b1 = await store.send_signal("r1", "b", b"2")
            a2 = await store.send_signal("r1", "a", b"3")
            await store.send_signal("r2", "a", b"other run")
            assert a1 is not None and b1 is not None and a2 is not None  # no delivery id
            assert a1 < b1 < a2
            first = await store.next_signal("r1", "a")
            assert first is not None
            assert (first.id, first.run_id, first.name, first.payload) == (a1, "r1", "a", b"1")
            [claimed] = [
                c for c in await store.claim_runs("w", limit=5, ttl=30) if c.run.run_id == "r1"
            ]
            lease = claimed.lease
            await store.append_events(lease, 1, [event(1, "signal_received")], consume_signal=a1)
            second = await store.next_signal("r1", "a")
            assert second is not None and (second.id, second.payload) == (a2, b"3")
            b = await store.next_signal("r1", "b")
            assert b is not None and b.id == b1
            await store.append_events(lease, 2, [event(2, "signal_received")], consume_signal=a2)
            assert await store.next_signal("r1", "a") is None
            assert await store.next_signal("r1", "missing") is None

        run_with_store(store_factory, body)

    def test_a_signal_is_consumed_once(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "r1")
            other = await leased(store, "r2")
            sid = await store.send_signal("r1", "go", b"x")
            theirs = await store.send_signal("r2", "go", b"y")
            await store.append_events(lease, 1, [event(1)], consume_signal=sid)
            with pytest.raises(StoreError) as info:
                await store.append_events(lease, 2, [event(2)], consume_signal=sid)
            assert not isinstance(info.value, LeaseLostError)
            with pytest.raises(StoreError):
                await store.append_events(lease, 2, [event(2)], consume_signal=theirs)
            with pytest.raises(StoreError):
                await store.append_events(lease, 2, [event(2)], consume_signal=10**9)
            assert [e.seq for e in await store.load_events("r1")] == [0, 1]
            assert (await get(store, "r1")).next_seq == 2
            mine = await store.next_signal("r2", "go")
            assert mine is not None and mine.id == theirs
            await store.append_events(other, 1, [event(1)], consume_signal=theirs)

        run_with_store(store_factory, body)

    def test_signal_to_unknown_or_finished_run_is_refused(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            with pytest.raises(RunNotFoundError):
                await store.send_signal("missing", "go", b"1")
            await finished(store, "done")
            with pytest.raises(RunFinishedError) as info:
                await store.send_signal("done", "go", b"1")
            assert info.value.state == "completed"
            assert await store.next_signal("done", "go") is None

        run_with_store(store_factory, body)

    def test_signal_wakes_a_suspended_run(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await suspended(store, "r1", None)
            await suspended(store, "r2", await store.now() + 3600)
            assert await claim_ids(store) == []
            await store.send_signal("r1", "go", b"1")
            await store.send_signal("r2", "go", b"1")
            assert (await get(store, "r1")).wake_at is not None
            assert sorted(await claim_ids(store)) == ["r1", "r2"]

        run_with_store(store_factory, body)

    def test_suspend_with_buffered_awaited_signal_wakes_now(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            a = await leased(store, "a")
            b = await leased(store, "b")
            await store.send_signal("a", "go", b"1")  # arrives while the holder runs
            await store.send_signal("b", "other", b"1")
            later = await store.now() + 3600
            await store.suspend_run(a, 1, [event(1)], wake_at=None, wake_on_signals={"go"})
            await store.suspend_run(b, 1, [event(1)], wake_at=later, wake_on_signals=["go"])
            woken = await get(store, "a")
            assert woken.state is RunState.SUSPENDED
            assert woken.wake_at is not None and woken.wake_at <= await store.now()
            assert (await get(store, "b")).wake_at == later
            assert await claim_ids(store) == ["a"]

        run_with_store(store_factory, body)

    def test_suspend_ignores_consumed_signals(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "r1")
            sid = await store.send_signal("r1", "go", b"1")
            await store.append_events(lease, 1, [event(1)], consume_signal=sid)
            await store.suspend_run(lease, 2, [], wake_at=None, wake_on_signals=["go"])
            assert (await get(store, "r1")).wake_at is None
            assert await claim_ids(store) == []

        run_with_store(store_factory, body)

    # -- delivery ids ----------------------------------------------------------------

    def test_a_repeated_delivery_id_is_a_no_op(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "r1")
            await store.create_run(new_run("r2"))
            first = await store.send_signal("r1", "go", b"1", delivery_id="d1")
            assert isinstance(first, int)
            assert await store.send_signal("r1", "go", b"2", delivery_id="d1") is None
            assert await store.send_signal("r1", "other", b"3", delivery_id="d1") is None
            other = await store.send_signal("r1", "go", b"4", delivery_id="d2")
            plain = await store.send_signal("r1", "go", b"5")  # no id: never deduplicated
            again = await store.send_signal("r1", "go", b"5")
            elsewhere = await store.send_signal("r2", "go", b"6", delivery_id="d1")  # per run
            assert None not in (other, plain, again, elsewhere)
            got = []
            for seq in range(1, 5):
                signal = await store.next_signal("r1", "go")
                assert signal is not None
                got.append((signal.id, signal.payload))
                await store.append_events(lease, seq, [event(seq)], consume_signal=signal.id)
            assert got == [(first, b"1"), (other, b"4"), (plain, b"5"), (again, b"5")]
            assert await store.next_signal("r1", "go") is None
            assert await store.next_signal("r1", "other") is None
            # Consumed, it still counts: a late retry delivers nothing.
            assert await store.send_signal("r1", "go", b"1", delivery_id="d1") is None
            assert await store.next_signal("r1", "go") is None

        run_with_store(store_factory, body)

    def test_concurrent_duplicate_sends_deliver_once(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await suspended(store, "r1", None)
            results = await asyncio.gather(
                *(
                    store.send_signal("r1", "go", str(i).encode(), delivery_id="once")
                    for i in range(20)
                )
            )
            [sid] = [r for r in results if r is not None]
            assert results.count(None) == 19
            signal = await store.next_signal("r1", "go")
            assert signal is not None and signal.id == sid
            [claimed] = await store.claim_runs("w", limit=5, ttl=30)
            await store.append_events(claimed.lease, 1, [event(1)], consume_signal=sid)
            assert await store.next_signal("r1", "go") is None

        run_with_store(store_factory, body)

    def test_a_retry_after_the_run_ended_is_a_no_op(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "r1")
            await store.send_signal("r1", "go", b"1", delivery_id="d1")
            await store.finish_run(lease, 1, [event(1)], state=RunState.COMPLETED)
            assert await store.send_signal("r1", "go", b"1", delivery_id="d1") is None
            with pytest.raises(RunFinishedError):
                await store.send_signal("r1", "go", b"1", delivery_id="d2")
            with pytest.raises(RunNotFoundError):
                await store.send_signal("missing", "go", b"1", delivery_id="d1")

        run_with_store(store_factory, body)

    def test_delivery_ids_are_unique_along_a_continue_as_new_chain(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "c")
            used = await store.send_signal("c", "go", b"1", delivery_id="used")
            waiting = await store.send_signal("c", "go", b"2", delivery_id="waiting")
            assert used is not None and waiting is not None
            await store.append_events(lease, 1, [event(1)], consume_signal=used)
            run = await get(store, "c")
            nxt = NewRun(
                "c/continue:1",
                run.workflow,
                run.version,
                b"{}",
                NewEvent("run_started", None, b"{}"),
                chain_id="c",
                generation=1,
            )
            await store.continue_run(lease, 2, [event(2, "run_continued")], nxt)
            # Retries reach the successor, which has both already: one consumed in
            # the first run, one moved to it unconsumed.
            assert await store.send_signal("c", "go", b"1", delivery_id="used") is None
            assert (
                await store.send_signal("c/continue:1", "go", b"2", delivery_id="waiting") is None
            )
            fresh = await store.send_signal("c", "go", b"3", delivery_id="fresh")
            [claimed] = await store.claim_runs("w2", limit=1, ttl=30)
            got = []
            while (signal := await store.next_signal("c/continue:1", "go")) is not None:
                got.append(signal.id)
                seq = len(got)
                await store.append_events(
                    claimed.lease, seq, [event(seq)], consume_signal=signal.id
                )
            assert got == [waiting, fresh]

        run_with_store(store_factory, body)

    def test_a_signal_to_a_run_being_cancelled_is_refused(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            await leased(store, "r1")
            before = await store.send_signal("r1", "go", b"0", delivery_id="early")
            assert await store.request_cancel("r1", CANCELLED) is RunState.RUNNING
            updated = (await get(store, "r1")).updated_at
            with pytest.raises(RunCancellingError) as info:
                await store.send_signal("r1", "go", b"1")
            assert info.value.run_id == "r1"
            with pytest.raises(RunCancellingError):
                await store.send_signal("r1", "go", b"1", delivery_id="late")
            # A retry of a signal delivered before the request stays a no-op.
            assert await store.send_signal("r1", "go", b"0", delivery_id="early") is None
            signal = await store.next_signal("r1", "go")
            assert signal is not None and signal.id == before
            assert (await get(store, "r1")).updated_at == updated  # nothing written

        run_with_store(store_factory, body)

    # -- cancellation ----------------------------------------------------------------

    def test_cancel_unleased_run_cancels_at_once(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await store.create_run(new_run("pending"))
            await suspended(store, "suspended", None)
            for run_id in ("pending", "suspended"):
                next_seq = (await get(store, run_id)).next_seq
                assert await store.request_cancel(run_id, CANCELLED) is RunState.CANCELLED
                run = await get(store, run_id)
                assert run.state is RunState.CANCELLED and run.next_seq == next_seq + 1
                assert run.wake_at is None and run.lease_owner is None
                last = (await store.load_events(run_id))[-1]
                assert (last.seq, last.type) == (next_seq, "run_cancelled")
            assert await claim_ids(store) == []

        run_with_store(store_factory, body)

    def test_cancel_leased_run_asks_the_holder(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "r1")
            assert await store.request_cancel("r1", CANCELLED) is RunState.RUNNING
            run = await get(store, "r1")
            assert run.cancel_requested and run.state is RunState.RUNNING
            assert run.lease_token == lease.token and len(await store.load_events("r1")) == 1
            await store.finish_run(lease, 1, [CANCELLED], state=RunState.CANCELLED)
            assert (await get(store, "r1")).state is RunState.CANCELLED

        run_with_store(store_factory, body)

    def test_cancel_requested_run_wakes_when_suspending(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "r1")
            await store.request_cancel("r1", CANCELLED)
            await store.suspend_run(lease, 1, [], wake_at=await store.now() + 3600)
            run = await get(store, "r1")
            assert run.wake_at is not None and run.wake_at <= await store.now()
            [claimed] = await store.claim_runs("w2", limit=1, ttl=30)
            assert claimed.run.cancel_requested

        run_with_store(store_factory, body)

    def test_cancel_with_expired_lease_cancels_at_once(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            stale = await expired_lease(store, "r1")
            assert await store.request_cancel("r1", CANCELLED) is RunState.CANCELLED
            with pytest.raises(LeaseLostError):
                await store.append_events(stale, 1, [event(1)])
            assert [e.type for e in await store.load_events("r1")] == [
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
            await store.suspend_run(lease, 1, [event(1)], wake_at=await store.now() + 3600)
            stale = await leased(store, "exp", ttl=0.5)
            await store.append_events(stale, 1, [event(1)])
            await wait_until_past(store, stale.expires_at)
            await expired_lease(store, "bare")  # nothing journaled: cancelled at once
            assert await store.request_cancel("sus", CANCELLED) is RunState.SUSPENDED
            assert await store.request_cancel("exp", CANCELLED) is RunState.RUNNING
            assert await store.request_cancel("bare", CANCELLED) is RunState.CANCELLED
            for run_id in ("sus", "exp"):
                run = await get(store, run_id)
                assert run.cancel_requested and run.next_seq == 2
                assert [e.type for e in await store.load_events(run_id)] == [
                    "run_started",
                    "step_completed",
                ]
            now = await store.now()
            assert (await get(store, "sus")).wake_at <= now  # type: ignore[operator]
            claimed = await store.claim_runs("w2", limit=10, ttl=30)
            assert {c.run.run_id for c in claimed} == {"sus", "exp"}
            assert all(c.run.cancel_requested for c in claimed)
            with pytest.raises(LeaseLostError):
                await store.append_events(stale, 2, [event(2)])

        run_with_store(store_factory, body)

    def test_delivered_cancel_request_does_not_wake_a_suspending_run(
        self, store_factory: StoreFactory
    ) -> None:
        """Cleanup code that sleeps: the request it already got must not make
        the run due at once; a new request does."""

        async def body(store: Store) -> None:
            lease = await leased(store, "r1")
            await store.request_cancel("r1", CANCELLED)
            later = await store.now() + 3600
            await store.suspend_run(lease, 1, [event(1)], wake_at=later, cancel_delivered=True)
            run = await get(store, "r1")
            assert run.wake_at == later and run.cancel_requested
            assert await claim_ids(store) == []
            assert await store.request_cancel("r1", CANCELLED) is RunState.SUSPENDED
            assert await claim_ids(store) == ["r1"]

        run_with_store(store_factory, body)

    def test_cancel_unknown_or_finished_run_is_refused(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            with pytest.raises(RunNotFoundError):
                await store.request_cancel("missing", CANCELLED)
            await finished(store, "done")
            with pytest.raises(RunFinishedError):
                await store.request_cancel("done", CANCELLED)
            await store.create_run(new_run("c"))
            await store.request_cancel("c", CANCELLED)
            with pytest.raises(RunFinishedError) as info:
                await store.request_cancel("c", CANCELLED)
            assert info.value.state == "cancelled"
            assert len(await store.load_events("c")) == 2

        run_with_store(store_factory, body)

    # -- notifications ---------------------------------------------------------------

    def test_wait_for_change_returns_early_after_a_write(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            loop = asyncio.get_running_loop()
            start = loop.time()
            waiter = asyncio.create_task(store.wait_for_change(10))
            await asyncio.sleep(0.05)
            assert not waiter.done()
            await store.create_run(new_run("r1"))
            await asyncio.wait_for(waiter, 5)
            assert loop.time() - start < 2
            await store.wait_for_change(0.05)  # absorb any late notice of that write
            waiter = asyncio.create_task(store.wait_for_change(10))
            await asyncio.sleep(0.05)
            start = loop.time()
            await store.send_signal("r1", "go", b"1")
            await asyncio.wait_for(waiter, 5)
            assert loop.time() - start < 2

        run_with_store(store_factory, body)

    def test_wait_for_change_waits_while_nothing_changes(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            loop = asyncio.get_running_loop()
            await store.create_run(new_run("r1"))
            early = 0
            for _ in range(5):
                start = loop.time()
                await store.wait_for_change(0.15)
                early += loop.time() - start < 0.12
            # A write may be reported more than once (the hint is allowed to be
            # early), but an idle store must not keep waking its waiters.
            assert early <= 2
            await store.wait_for_change(0)

        run_with_store(store_factory, body)
