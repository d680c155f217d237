"""Conformance of ``store.mailbox``: signals, their delivery ids, and how a suspend
sees them (mixed into StoreConformance)."""

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
from keel.store.base import NewEvent, NewRun
from keel.store.ports import Continue, Finish, Store, Suspend, Turn
from keel.testing.conformance_helpers import (
    CANCELLED,
    StoreFactory,
    claim_ids,
    event,
    finished,
    get,
    leased,
    new_run,
    run_with_store,
    suspended,
)


class SignalConformance:
    """Every backend buffers, delivers and deduplicates signals the same way."""

    # -- signals -------------------------------------------------------------

    def test_signals_are_buffered_and_fifo_per_name(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await store.runs.create(new_run("r1"))
            await store.runs.create(new_run("r2"))
            a1 = await store.mailbox.send("r1", "a", b"1")
            b1 = await store.mailbox.send("r1", "b", b"2")
            a2 = await store.mailbox.send("r1", "a", b"3")
            await store.mailbox.send("r2", "a", b"other run")
            assert a1 is not None and b1 is not None and a2 is not None  # no delivery id
            assert a1 < b1 < a2
            first = await store.mailbox.next("r1", "a")
            assert first is not None
            assert (first.id, first.run_id, first.name, first.payload) == (a1, "r1", "a", b"1")
            [claimed] = [
                c for c in await store.runs.claim("w", limit=5, ttl=30) if c.run.run_id == "r1"
            ]
            lease = claimed.lease
            await store.runs.commit(
                lease, Turn(1, [event(1, "signal_received")], consume_signal=a1)
            )
            second = await store.mailbox.next("r1", "a")
            assert second is not None and (second.id, second.payload) == (a2, b"3")
            b = await store.mailbox.next("r1", "b")
            assert b is not None and b.id == b1
            await store.runs.commit(
                lease, Turn(2, [event(2, "signal_received")], consume_signal=a2)
            )
            assert await store.mailbox.next("r1", "a") is None
            assert await store.mailbox.next("r1", "missing") is None

        run_with_store(store_factory, body)

    def test_a_signal_is_consumed_once(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "r1")
            other = await leased(store, "r2")
            sid = await store.mailbox.send("r1", "go", b"x")
            theirs = await store.mailbox.send("r2", "go", b"y")
            await store.runs.commit(lease, Turn(1, [event(1)], consume_signal=sid))
            with pytest.raises(StoreError) as info:
                await store.runs.commit(lease, Turn(2, [event(2)], consume_signal=sid))
            assert not isinstance(info.value, LeaseLostError)
            with pytest.raises(StoreError):
                await store.runs.commit(lease, Turn(2, [event(2)], consume_signal=theirs))
            with pytest.raises(StoreError):
                await store.runs.commit(lease, Turn(2, [event(2)], consume_signal=10**9))
            assert [e.seq for e in await store.reads.history("r1")] == [0, 1]
            assert (await get(store, "r1")).next_seq == 2
            mine = await store.mailbox.next("r2", "go")
            assert mine is not None and mine.id == theirs
            await store.runs.commit(other, Turn(1, [event(1)], consume_signal=theirs))

        run_with_store(store_factory, body)

    def test_signal_to_unknown_or_finished_run_is_refused(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            with pytest.raises(RunNotFoundError):
                await store.mailbox.send("missing", "go", b"1")
            await finished(store, "done")
            with pytest.raises(RunFinishedError) as info:
                await store.mailbox.send("done", "go", b"1")
            assert info.value.state == "completed"
            assert await store.mailbox.next("done", "go") is None

        run_with_store(store_factory, body)

    def test_signal_wakes_a_suspended_run(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await suspended(store, "r1", None)
            await suspended(store, "r2", await store.now() + 3600)
            assert await claim_ids(store) == []
            await store.mailbox.send("r1", "go", b"1")
            await store.mailbox.send("r2", "go", b"1")
            assert (await get(store, "r1")).wake_at is not None
            assert sorted(await claim_ids(store)) == ["r1", "r2"]

        run_with_store(store_factory, body)

    def test_suspend_with_buffered_awaited_signal_wakes_now(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            a = await leased(store, "a")
            b = await leased(store, "b")
            await store.mailbox.send("a", "go", b"1")  # arrives while the holder runs
            await store.mailbox.send("b", "other", b"1")
            later = await store.now() + 3600
            await store.runs.commit(
                a, Turn(1, [event(1)], end=Suspend(None, wake_on_signals={"go"}))
            )
            await store.runs.commit(
                b, Turn(1, [event(1)], end=Suspend(later, wake_on_signals=["go"]))
            )
            woken = await get(store, "a")
            assert woken.state is RunState.SUSPENDED
            assert woken.wake_at is not None and woken.wake_at <= await store.now()
            assert (await get(store, "b")).wake_at == later
            assert await claim_ids(store) == ["a"]

        run_with_store(store_factory, body)

    def test_suspend_ignores_consumed_signals(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "r1")
            sid = await store.mailbox.send("r1", "go", b"1")
            await store.runs.commit(lease, Turn(1, [event(1)], consume_signal=sid))
            await store.runs.commit(lease, Turn(2, [], end=Suspend(None, wake_on_signals=["go"])))
            assert (await get(store, "r1")).wake_at is None
            assert await claim_ids(store) == []

        run_with_store(store_factory, body)

    # -- delivery ids --------------------------------------------------------

    def test_a_repeated_delivery_id_is_a_no_op(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "r1")
            await store.runs.create(new_run("r2"))
            first = await store.mailbox.send("r1", "go", b"1", delivery_id="d1")
            assert isinstance(first, int)
            assert await store.mailbox.send("r1", "go", b"2", delivery_id="d1") is None
            assert await store.mailbox.send("r1", "other", b"3", delivery_id="d1") is None
            other = await store.mailbox.send("r1", "go", b"4", delivery_id="d2")
            plain = await store.mailbox.send("r1", "go", b"5")  # no id: never deduplicated
            again = await store.mailbox.send("r1", "go", b"5")
            elsewhere = await store.mailbox.send("r2", "go", b"6", delivery_id="d1")  # per run
            assert None not in (other, plain, again, elsewhere)
            got = []
            for seq in range(1, 5):
                signal = await store.mailbox.next("r1", "go")
                assert signal is not None
                got.append((signal.id, signal.payload))
                await store.runs.commit(lease, Turn(seq, [event(seq)], consume_signal=signal.id))
            assert got == [(first, b"1"), (other, b"4"), (plain, b"5"), (again, b"5")]
            assert await store.mailbox.next("r1", "go") is None
            assert await store.mailbox.next("r1", "other") is None
            # Consumed, it still counts: a late retry delivers nothing.
            assert await store.mailbox.send("r1", "go", b"1", delivery_id="d1") is None
            assert await store.mailbox.next("r1", "go") is None

        run_with_store(store_factory, body)

    def test_concurrent_duplicate_sends_deliver_once(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await suspended(store, "r1", None)
            results = await asyncio.gather(
                *(
                    store.mailbox.send("r1", "go", str(i).encode(), delivery_id="once")
                    for i in range(20)
                )
            )
            [sid] = [r for r in results if r is not None]
            assert results.count(None) == 19
            signal = await store.mailbox.next("r1", "go")
            assert signal is not None and signal.id == sid
            [claimed] = await store.runs.claim("w", limit=5, ttl=30)
            await store.runs.commit(claimed.lease, Turn(1, [event(1)], consume_signal=sid))
            assert await store.mailbox.next("r1", "go") is None

        run_with_store(store_factory, body)

    def test_a_retry_after_the_run_ended_is_a_no_op(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "r1")
            await store.mailbox.send("r1", "go", b"1", delivery_id="d1")
            await store.runs.commit(lease, Turn(1, [event(1)], end=Finish(RunState.COMPLETED)))
            assert await store.mailbox.send("r1", "go", b"1", delivery_id="d1") is None
            with pytest.raises(RunFinishedError):
                await store.mailbox.send("r1", "go", b"1", delivery_id="d2")
            with pytest.raises(RunNotFoundError):
                await store.mailbox.send("missing", "go", b"1", delivery_id="d1")

        run_with_store(store_factory, body)

    def test_delivery_ids_are_unique_along_a_continue_as_new_chain(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "c")
            used = await store.mailbox.send("c", "go", b"1", delivery_id="used")
            waiting = await store.mailbox.send("c", "go", b"2", delivery_id="waiting")
            assert used is not None and waiting is not None
            await store.runs.commit(lease, Turn(1, [event(1)], consume_signal=used))
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
            await store.runs.commit(lease, Turn(2, [event(2, "run_continued")], end=Continue(nxt)))
            # Retries reach the successor, which has both already: one consumed in
            # the first run, one moved to it unconsumed.
            assert await store.mailbox.send("c", "go", b"1", delivery_id="used") is None
            assert (
                await store.mailbox.send("c/continue:1", "go", b"2", delivery_id="waiting") is None
            )
            fresh = await store.mailbox.send("c", "go", b"3", delivery_id="fresh")
            [claimed] = await store.runs.claim("w2", limit=1, ttl=30)
            got = []
            while (signal := await store.mailbox.next("c/continue:1", "go")) is not None:
                got.append(signal.id)
                seq = len(got)
                await store.runs.commit(
                    claimed.lease, Turn(seq, [event(seq)], consume_signal=signal.id)
                )
            assert got == [waiting, fresh]

        run_with_store(store_factory, body)

    def test_a_signal_to_a_run_being_cancelled_is_refused(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            await leased(store, "r1")
            before = await store.mailbox.send("r1", "go", b"0", delivery_id="early")
            assert await store.runs.request_cancel("r1", CANCELLED) is RunState.RUNNING
            updated = (await get(store, "r1")).updated_at
            with pytest.raises(RunCancellingError) as info:
                await store.mailbox.send("r1", "go", b"1")
            assert info.value.run_id == "r1"
            with pytest.raises(RunCancellingError):
                await store.mailbox.send("r1", "go", b"1", delivery_id="late")
            # A retry of a signal delivered before the request stays a no-op.
            assert await store.mailbox.send("r1", "go", b"0", delivery_id="early") is None
            signal = await store.mailbox.next("r1", "go")
            assert signal is not None and signal.id == before
            assert (await get(store, "r1")).updated_at == updated  # nothing written

        run_with_store(store_factory, body)
