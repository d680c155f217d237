"""Conformance tests for continue-as-new (mixed into StoreConformance)."""

from __future__ import annotations

import asyncio

import pytest

from keel.core.states import RunState
from keel.errors import LeaseLostError, RunExistsError, RunFinishedError
from keel.store.base import Lease, NewEvent, NewRun, RunRecord
from keel.store.ports import Continue, Store, Suspend, Turn
from keel.testing.conformance_helpers import (
    CANCELLED,
    StoreFactory,
    child_run,
    claim_ids,
    event,
    expired_lease,
    get,
    leased,
    new_run,
    run_with_store,
)

CONTINUED = NewEvent("run_continued", None, b"{}")


def successor(run: RunRecord, run_id: str | None = None, data: bytes = b'{"n":2}') -> NewRun:
    """The next run of ``run``'s chain (``run_id`` defaults to ``<chain>/continue:<gen>``)."""
    generation = run.generation + 1
    return NewRun(
        run_id or f"{run.chain}/continue:{generation}",
        run.workflow,
        "v2",
        data,
        NewEvent("run_started", None, data),
        parent_run_id=run.parent_run_id,
        parent_close=run.parent_close,
        depth=run.depth,
        chain_id=run.chain,
        generation=generation,
    )


async def _continue(store: Store, lease: Lease, first_seq: int = 1) -> RunRecord:
    run = await get(store, lease.run_id)
    new = successor(run)
    await store.runs.commit(lease, Turn(first_seq, [event(0), CONTINUED], end=Continue(new)))
    return await get(store, new.run_id)


class ContinueConformance:
    """Every backend switches a run to its successor in one fenced transaction,
    moves its unconsumed signals, and lets signals and cancels follow the chain."""

    def test_continue_run_ends_the_run_and_creates_one_successor(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "c")
            nxt = await _continue(store, lease)
            first = await get(store, "c")
            assert first.state is RunState.CONTINUED
            assert (first.continued_to, first.chain, first.chain_id) == ("c/continue:1", "c", None)
            assert (first.next_seq, first.lease_owner, first.wake_at) == (3, None, None)
            assert [e.type for e in await store.reads.history("c")] == [
                "run_started",
                "step_completed",
                "run_continued",
            ]
            assert (nxt.state, nxt.version, nxt.input, nxt.next_seq) == (
                RunState.PENDING,
                "v2",
                b'{"n":2}',
                1,
            )
            assert (nxt.chain, nxt.chain_id, nxt.generation, nxt.continued_to) == (
                "c",
                "c",
                1,
                None,
            )
            assert [e.type for e in await store.reads.history(nxt.run_id)] == ["run_started"]
            [claimed] = await store.runs.claim("w3", limit=5, ttl=30)
            assert claimed.run.run_id == nxt.run_id
            # And again: generation 2 keeps the chain id.
            last = await _continue(store, claimed.lease)
            assert (last.run_id, last.chain, last.generation) == ("c/continue:2", "c", 2)

        run_with_store(store_factory, body)

    def test_continue_run_is_fenced(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            stale = await expired_lease(store, "f")
            assert await claim_ids(store) == ["f"]  # another worker holds it now
            run = await get(store, "f")
            with pytest.raises(LeaseLostError):
                await store.runs.commit(stale, Turn(1, [CONTINUED], end=Continue(successor(run))))
            assert await store.reads.get_run("f/continue:1") is None
            after = await get(store, "f")
            assert (after.state, after.next_seq, after.continued_to) == (RunState.RUNNING, 1, None)
            assert len(await store.reads.history("f")) == 1

        run_with_store(store_factory, body)

    def test_a_retried_switch_creates_no_second_successor(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "r")
            run = await get(store, "r")
            await store.runs.commit(lease, Turn(1, [CONTINUED], end=Continue(successor(run))))
            with pytest.raises(LeaseLostError):  # the same write again: the run has ended
                await store.runs.commit(lease, Turn(1, [CONTINUED], end=Continue(successor(run))))
            page = await store.reads.list_runs()
            assert sorted(r.run_id for r in page.runs) == ["r", "r/continue:1"]

        run_with_store(store_factory, body)

    def test_a_taken_successor_id_writes_nothing(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await store.runs.create(new_run("t/continue:1"))
            lease = await leased(store, "t")
            with pytest.raises(RunExistsError):
                await store.runs.commit(
                    lease,
                    Turn(1, [event(0), CONTINUED], end=Continue(successor(await get(store, "t")))),
                )
            run = await get(store, "t")
            assert (run.state, run.next_seq, run.continued_to) == (RunState.RUNNING, 1, None)
            assert len(await store.reads.history("t")) == 1

        run_with_store(store_factory, body)

    def test_unconsumed_signals_move_and_later_ones_follow_the_chain(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "s")
            used = await store.mailbox.send("s", "go", b"0")
            await store.runs.commit(lease, Turn(1, [event(0)], consume_signal=used))
            a = await store.mailbox.send("s", "msg", b"1")
            b = await store.mailbox.send("s", "msg", b"2")
            nxt = await _continue(store, lease, first_seq=2)
            assert await store.mailbox.next("s", "msg") is None
            moved = await store.mailbox.next(nxt.run_id, "msg")
            assert moved is not None and (moved.id, moved.payload) == (a, b"1")
            assert await store.mailbox.next(nxt.run_id, "go") is None  # consumed: stays
            c = await store.mailbox.send("s", "msg", b"3")  # to the first id: reaches the tip
            assert a is not None and b is not None and c is not None
            assert a < b < c
            tip = await get(store, nxt.run_id)
            assert tip.wake_at is not None
            [claimed] = await store.runs.claim("w2", limit=1, ttl=30)
            await store.runs.commit(claimed.lease, Turn(1, [event(1)], consume_signal=a))
            await store.runs.commit(claimed.lease, Turn(2, [event(2)], consume_signal=b))
            last = await store.mailbox.next(nxt.run_id, "msg")
            assert last is not None and (last.id, last.payload) == (c, b"3")

        run_with_store(store_factory, body)

    def test_cancel_follows_the_chain_and_an_ended_chain_refuses(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "k")
            nxt = await _continue(store, lease)
            # The successor has journaled nothing but its start: cancelled at once.
            assert await store.runs.request_cancel("k", CANCELLED) is RunState.CANCELLED
            assert (await get(store, nxt.run_id)).state is RunState.CANCELLED
            assert (await get(store, "k")).state is RunState.CONTINUED
            with pytest.raises(RunFinishedError):
                await store.mailbox.send("k", "x", b"1")
            with pytest.raises(RunFinishedError):
                await store.runs.request_cancel("k", CANCELLED)

        run_with_store(store_factory, body)

    def test_a_pending_cancel_request_and_the_parent_go_with_the_successor(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            parent = await leased(store, "p")
            await store.runs.commit(
                parent, Turn(1, [event(0, "child_started")], children=[child_run("p/k", "p")])
            )
            await store.runs.commit(
                parent, Turn(2, [], end=Suspend(None, wake_on_children=["p/k"]))
            )
            [claimed] = await store.runs.claim("w1", limit=1, ttl=30)
            assert claimed.run.run_id == "p/k"
            await store.runs.commit(claimed.lease, Turn(1, [event(0)]))
            assert await store.runs.request_cancel("p/k", CANCELLED) is RunState.RUNNING
            # A grandchild the child closes when it continues.
            await store.runs.commit(
                claimed.lease,
                Turn(2, [event(1, "child_started")], children=[child_run("p/k/g", "p/k", depth=2)]),
            )
            nxt = await _continue(store, claimed.lease, first_seq=3)
            assert (nxt.parent_run_id, nxt.parent_close, nxt.depth) == ("p", "cancel", 1)
            assert nxt.cancel_requested
            assert (await get(store, "p")).wake_at is None  # the chain goes on: no wake-up
            assert (await get(store, "p/k/g")).cancel_requested

        run_with_store(store_factory, body)

    def test_signals_sent_during_the_switch_are_never_lost(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "race")
            run = await get(store, "race")

            async def send(i: int) -> int:
                sid = await store.mailbox.send("race", "x", str(i).encode())
                assert sid is not None  # sent without a delivery id: always delivered
                return sid

            sends = [asyncio.ensure_future(send(i)) for i in range(20)]
            await asyncio.sleep(0)
            await store.runs.commit(lease, Turn(1, [CONTINUED], end=Continue(successor(run))))
            sends += [asyncio.ensure_future(send(i)) for i in range(20, 30)]
            ids = await asyncio.gather(*sends)
            assert await store.mailbox.next("race", "x") is None  # none left behind
            [claimed] = await store.runs.claim("w2", limit=5, ttl=30)
            assert claimed.run.run_id == "race/continue:1"
            got = []
            for seq in range(1, 31):
                signal = await store.mailbox.next(claimed.run.run_id, "x")
                assert signal is not None, f"signal {seq} of 30 is missing"
                got.append(signal.id)
                await store.runs.commit(
                    claimed.lease, Turn(seq, [event(seq)], consume_signal=signal.id)
                )
            assert got == sorted(ids)  # each once, in delivery order

        run_with_store(store_factory, body)
