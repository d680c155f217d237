"""Conformance of ``store.runs.commit``: a turn that combines its parts, applied all
or nothing, and run states that change only along the transition table (mixed
into StoreConformance)."""

from __future__ import annotations

import dataclasses

import pytest

from keel.core.states import TRANSITIONS, RunState
from keel.errors import LeaseLostError, RunExistsError, StoreError
from keel.store.base import Claimed, NewEvent, RunRecord
from keel.store.ports import Continue, Finish, Store, Suspend, Turn
from keel.testing.conformance_continue import successor
from keel.testing.conformance_helpers import (
    CANCELLED,
    SHORT_TTL,
    StoreFactory,
    child_run,
    event,
    get,
    leased,
    new_run,
    run_with_store,
    started,
    wait_until_past,
)
from keel.testing.conformance_tasks import new_task, scheduled

Transition = tuple[RunState, RunState]


async def _unchanged(store: Store, before: RunRecord, absent: tuple[str, ...] = ()) -> None:
    """The run row and journal are as ``before``; none of ``absent`` exists."""
    assert await get(store, before.run_id) == before
    assert [e.seq for e in await store.reads.history(before.run_id)] == list(range(before.next_seq))
    for run_id in absent:
        assert await store.reads.get_run(run_id) is None


async def walk_lifecycle(store: Store) -> set[Transition]:
    """Drive runs through every state change the store API can make and return the
    changes seen (a ``running -> running`` is a claim of an expired lease)."""
    seen: set[Transition] = set()
    rows: dict[str, RunRecord] = {}

    async def look() -> None:
        for run in (await store.reads.list_runs(limit=1000)).runs:
            old = rows.get(run.run_id)
            if old is not None and (
                old.state is not run.state or old.lease_token != run.lease_token
            ):
                seen.add((old.state, run.state))
            rows[run.run_id] = run

    async def lease_of(run_id: str, owner: str = "w", ttl: float = 30.0) -> Claimed:
        [claimed] = [c for c in await store.runs.claim(owner, limit=10, ttl=ttl)]
        assert claimed.run.run_id == run_id
        await look()
        return claimed

    async def commit(
        claimed: Claimed, end: Suspend | Finish | Continue, journal: bool = True
    ) -> None:
        events = [event(claimed.run.next_seq)] if journal else []
        await store.runs.commit(claimed.lease, Turn(claimed.run.next_seq, events, end=end))
        await look()

    now = await store.now()
    for run_id in ("a", "b", "c", "d", "e", "f"):  # one at a time: each claim takes one
        await store.runs.create(new_run(run_id))
        await look()
        ttl = SHORT_TTL if run_id in ("b", "f") else 30.0
        first = await lease_of(run_id, ttl=ttl)  # pending -> running
        if run_id == "a":
            await commit(first, Suspend(now - 1))  # running -> suspended
            again = await lease_of("a")  # suspended -> running
            await commit(again, Finish(RunState.COMPLETED))  # running -> completed
        elif run_id == "b":
            await wait_until_past(store, first.lease.expires_at)
            taken = await lease_of("b")  # running -> running: an expired lease taken over
            await commit(taken, Finish(RunState.FAILED))  # running -> failed
        elif run_id == "c":
            await commit(first, Finish(RunState.CANCELLED))  # running -> cancelled
        elif run_id == "d":
            await commit(first, Continue(successor(first.run)))  # running -> continued
            # The successor journaled nothing but its start: pending -> cancelled.
            await store.runs.request_cancel("d", CANCELLED)
            await look()
        elif run_id == "e":
            await commit(first, Suspend(None), journal=False)  # running -> suspended
            await store.runs.request_cancel("e", CANCELLED)  # suspended -> cancelled
            await look()
        else:
            # Journaled nothing and its holder's lease expired: running -> cancelled.
            await wait_until_past(store, first.lease.expires_at)
            await store.runs.request_cancel("f", CANCELLED)
            await look()
    # An operator's terminate, from each live state.
    terminated = NewEvent("run_terminated", None, b"{}")
    await store.runs.create(new_run("t-pending"))
    await look()
    await store.admin.terminate("t-pending", terminated)  # pending -> terminated
    await look()
    for run_id in ("t-running", "t-suspended"):
        await store.runs.create(new_run(run_id))
        await look()
        held = await lease_of(run_id)
        if run_id == "t-suspended":
            await commit(held, Suspend(None))
        await store.admin.terminate(run_id, terminated)  # running/suspended -> terminated
        await look()
    return seen


class TurnConformance:
    """A turn's parts are applied in order in one transaction; a refused turn, or a
    change of state outside :data:`keel.core.states.TRANSITIONS`, writes nothing."""

    def test_a_turn_combines_events_signal_children_tasks_and_end(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "p")
            sid = await store.mailbox.send("p", "go", b"1")
            task = new_task("step:t#0")
            committed = await store.runs.commit(
                lease,
                Turn(
                    1,
                    [event(1, "signal_received"), started(0), scheduled(task)],
                    consume_signal=sid,
                    children=[child_run("p/a", "p", "abandon")],
                    tasks=[task],
                    # Each awaited thing is in this very turn, so none may wake it:
                    # the signal is consumed first, the child and task just made.
                    end=Suspend(
                        None,
                        wake_on_signals=["go"],
                        wake_on_children=["p/a"],
                        wake_on_tasks=["step:t#0"],
                    ),
                ),
            )
            run = await get(store, "p")
            assert (run.state, run.next_seq, run.wake_at, run.lease_owner) == (
                RunState.SUSPENDED,
                4,
                None,
                None,
            )
            assert [(e.seq, e.type) for e in await store.reads.history("p")] == [
                (0, "run_started"),
                (1, "signal_received"),
                (2, "child_started"),
                (3, "step_dispatched"),
            ]
            assert await store.mailbox.next("p", "go") is None
            child = await get(store, "p/a")
            assert (child.state, child.parent_run_id) == (RunState.PENDING, "p")
            stored = await store.tasks.get("p", "step:t#0")
            assert stored is not None and committed.task_ids == [stored.task_id]
            assert stored.state == "available"

        run_with_store(store_factory, body)

    def test_a_finishing_turn_ends_the_run_after_its_other_parts(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "p")
            task = new_task("step:t#0")
            committed = await store.runs.commit(
                lease,
                Turn(
                    1,
                    [started(0), scheduled(task), event(3, "run_completed")],
                    children=[child_run("p/c", "p", "cancel")],
                    tasks=[task],
                    end=Finish(RunState.COMPLETED, result=b"1"),
                ),
            )
            run = await get(store, "p")
            assert (run.state, run.result, run.next_seq) == (RunState.COMPLETED, b"1", 4)
            # The end came last: the child it closes was asked to cancel, and the
            # task it had just dispatched was dropped with the other open ones.
            assert (await get(store, "p/c")).cancel_requested
            assert len(committed.task_ids) == 1
            assert await store.tasks.get("p", "step:t#0") is None

        run_with_store(store_factory, body)

    def test_a_refused_part_writes_nothing_of_the_turn(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await store.runs.create(new_run("taken"))
            other = await leased(store, "other")
            lease = await leased(store, "p")
            mine = await store.mailbox.send("p", "go", b"1")
            theirs = await store.mailbox.send("other", "go", b"2")
            done = new_task("step:done#0")
            await store.runs.commit(lease, Turn(1, [scheduled(done)], tasks=[done]))
            before = await get(store, "p")
            task = new_task("step:t#0")

            whole = Turn(
                2,
                [event(2), started(0), scheduled(task), event(4, "run_completed")],
                consume_signal=mine,
                children=[child_run("p/new", "p")],
                tasks=[task],
                end=Finish(RunState.COMPLETED, result=b"1"),
            )
            taken = [child_run("p/new", "p"), child_run("taken", "p")]
            refused: list[tuple[type[StoreError], Turn]] = [
                (RunExistsError, dataclasses.replace(whole, children=taken)),
                (
                    RunExistsError,
                    dataclasses.replace(whole, end=Continue(successor(before, "p/new"))),
                ),
                (
                    RunExistsError,
                    dataclasses.replace(whole, end=Continue(successor(before, "taken"))),
                ),
                (StoreError, dataclasses.replace(whole, consume_signal=theirs)),
                (StoreError, dataclasses.replace(whole, tasks=[task, done])),
                (StoreError, dataclasses.replace(whole, first_seq=3)),
            ]
            for error, bad in refused:
                with pytest.raises(error) as info:
                    await store.runs.commit(lease, bad)
                assert not isinstance(info.value, LeaseLostError), info.value
                await _unchanged(store, before, absent=("p/new", "p/continue:1"))
                signal = await store.mailbox.next("p", "go")
                assert signal is not None and signal.id == mine
                assert await store.tasks.get("p", "step:t#0") is None
                assert (await get(store, "other")).next_seq == 1
            assert (await get(store, "taken")).parent_run_id is None
            # The lease still holds and the same turn, fixed, goes through whole.
            await store.runs.commit(lease, whole)
            assert (await get(store, "p")).state is RunState.COMPLETED
            assert (await get(store, "p/new")).parent_run_id == "p"
            await store.runs.commit(other, Turn(1, [event(1)], consume_signal=theirs))

        run_with_store(store_factory, body)

    def test_an_illegal_transition_is_refused_and_writes_nothing(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "r1")
            await store.runs.commit(lease, Turn(1, [event(1)]))
            before = await get(store, "r1")
            # A Finish ends a run for good; continued needs the successor a Continue brings.
            for state in (
                RunState.PENDING,
                RunState.RUNNING,
                RunState.SUSPENDED,
                RunState.CONTINUED,
            ):
                turn = Turn(
                    2,
                    [event(2, "run_completed")],
                    children=[child_run("r1/c", "r1")],
                    end=Finish(state, result=b"1"),
                )
                with pytest.raises(StoreError) as info:
                    await store.runs.commit(lease, turn)
                assert isinstance(info.value, ValueError)  # a bad argument, too
                await _unchanged(store, before, absent=("r1/c",))
            # An ended run changes no more: its old lease is fenced off.
            await store.runs.commit(lease, Turn(2, [], end=Finish(RunState.COMPLETED)))
            ended = await get(store, "r1")
            for end in (None, Suspend(None), Finish(RunState.FAILED), Continue(successor(ended))):
                with pytest.raises(LeaseLostError):
                    await store.runs.commit(lease, Turn(2, [], end=end))
                await _unchanged(store, ended, absent=("r1/continue:1",))

        run_with_store(store_factory, body)

    def test_every_state_change_is_in_the_transition_table(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            seen = await walk_lifecycle(store)
            table = {(src, dst) for src, targets in TRANSITIONS.items() for dst in targets}
            assert seen <= table, sorted(seen - table)
            assert len(seen) >= 10  # the walk did go through the lifecycle

        run_with_store(store_factory, body)
