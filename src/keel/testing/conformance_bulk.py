"""Conformance of ``store.admin.bulk``: one page of runs acted on in one
transaction, each run as the single-run action does it (mixed into
StoreConformance). A live worker racing a bulk page is in
:mod:`keel.testing.conformance_admin`, beside the single-run races.
"""

from __future__ import annotations

import pytest

import keel.operations as operations
from keel.core.states import RunState
from keel.errors import (
    ConfigurationError,
    RunExistsError,
    RunFinishedError,
    RunNotFoundError,
    RunNotStuckError,
)
from keel.store.base import NewEvent, NewFork
from keel.store.ports import Store, Suspend, Turn
from keel.testing.conformance_admin import chain_of, fork_of, history_types
from keel.testing.conformance_helpers import (
    StoreFactory,
    event,
    finished,
    get,
    leased,
    new_run,
    run_with_store,
)


class BulkConformance:
    """Every backend acts on a page of runs alike."""

    def test_bulk_acts_on_a_page_and_lists_refusals(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            for i in range(5):
                await store.runs.create(new_run(f"p{i}", workflow="bulk"))
            await finished(store, "done")
            terminate = operations.bulk_act("terminate", reason="bulk")
            # Pages of two by the filter, newest first, each one transaction.
            seen: list[str] = []
            cursor = None
            while True:
                page = await store.admin.bulk(
                    terminate, where={"workflow": "bulk"}, after=cursor, limit=2
                )
                assert len(page.done) <= 2 and page.refused == []
                seen += [r.run_id for r in page.done]
                assert all(r.state is RunState.TERMINATED for r in page.done)
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
            assert sorted(seen) == [f"p{i}" for i in range(5)]
            # Named runs: the ended and the unknown are refused, typed; nothing
            # of them is written, and the page goes on.
            await store.runs.create(new_run("live"))
            page = await store.admin.bulk(terminate, run_ids=["done", "live", "missing"])
            assert [r.run_id for r in page.done] == ["live"]
            assert [(i, type(e)) for i, e in page.refused] == [
                ("done", RunFinishedError),
                ("missing", RunNotFoundError),
            ]
            assert await history_types(store, "done") == ["run_started"]
            # A resume that finds a run not stuck writes nothing to it.
            held = await leased(store, "held")
            resume = operations.bulk_act("resume")  # idle_for: the default
            page = await store.admin.bulk(resume, run_ids=["held"])
            assert page.done == [] and isinstance(page.refused[0][1], RunNotStuckError)
            assert (await get(store, "held")).lease_token == held.token
            with pytest.raises(ConfigurationError):
                await store.admin.bulk(terminate, run_ids=["a"] * 3, limit=2)
            with pytest.raises(ConfigurationError):
                await store.admin.bulk(terminate, run_ids=["a"], where={"workflow": "x"})

        run_with_store(store_factory, body)

    def test_bulk_cancel_and_resume_do_what_the_single_actions_do(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            ids = await chain_of(store, "c", 2, RunState.COMPLETED)  # (claims what is due)
            await store.runs.create(new_run("fresh"))  # nothing journaled: cancelled at once
            lease = await leased(store, "busy")
            await store.runs.commit(lease, Turn(1, [event(1)]))  # a cancel is requested
            cancel = operations.bulk_act("cancel")
            page = await store.admin.bulk(cancel, run_ids=["fresh", "busy", ids[0]])
            assert {r.run_id: r.state for r in page.done} == {
                "fresh": RunState.CANCELLED,
                "busy": RunState.RUNNING,
            }
            assert (await get(store, "busy")).cancel_requested
            assert [i for i, _ in page.refused] == [ids[0]]  # its chain has ended
            # Resume with fire_timers journals the pending sleep's firing.
            sleeper = await leased(store, "sleeper")
            timer = NewEvent("timer_started", "sleep:nap#0", b"{}")
            await store.runs.commit(sleeper, Turn(1, [timer], end=Suspend(None)))
            fire = operations.bulk_act("resume", fire_timers=True)
            page = await store.admin.bulk(fire, run_ids=["sleeper"])
            assert [r.run_id for r in page.done] == ["sleeper"]
            last = (await store.reads.history("sleeper"))[-1]
            assert (last.type, last.command) == ("timer_fired", "sleep:nap#0")
            row = await get(store, "sleeper")
            assert row.wake_at is not None and row.wake_at <= await store.now()

        run_with_store(store_factory, body)

    def test_fork_many_writes_a_page_of_forks_and_lists_refusals(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            for run_id in ("o1", "o2", "o3"):
                await finished(store, run_id)
            await store.runs.create(new_run("taken"))
            forks = [
                NewFork(fork_of("o1", "f1", 1), [event(1)]),
                NewFork(fork_of("gone", "f2", 1), []),  # its original does not exist
                NewFork(fork_of("o2", "taken", 1), [event(1)]),  # its run id is taken
                NewFork(fork_of("o3", "f3", 1), [], redeliver_signals=False),
            ]
            page = await store.admin.fork_many(forks)
            assert [(r.run_id, r.forked_from, r.state) for r in page.done] == [
                ("f1", "o1", RunState.PENDING),
                ("f3", "o3", RunState.PENDING),
            ]
            assert [(i, type(e)) for i, e in page.refused] == [
                ("gone", RunNotFoundError),
                ("o2", RunExistsError),
            ]
            assert page.next_cursor is None
            assert await history_types(store, "f1") == ["run_started", "step_completed"]
            assert await history_types(store, "taken") == ["run_started"]  # untouched
            assert await store.reads.get_run("f2") is None
            with pytest.raises(ConfigurationError):
                await store.admin.fork_many([NewFork(new_run("no-original"), [])])

        run_with_store(store_factory, body)
