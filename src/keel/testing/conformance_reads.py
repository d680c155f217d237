"""Conformance of ``store.reads``: runs by id, pages and counts of runs, a run's history
(mixed into StoreConformance)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from keel.core.states import RunState
from keel.errors import (
    ConfigurationError,
)
from keel.store.base import RunRecord
from keel.store.ports import Finish, Store, Suspend, Turn
from keel.testing.conformance_helpers import (
    CANCELLED,
    ClockedStoreFactory,
    StoreFactory,
    child_run,
    event,
    expired_lease,
    finished,
    get,
    leased,
    new_run,
    run_with_store,
    started,
    suspended,
)


class ReadConformance:
    """Every backend reads, lists, counts and pages runs the same way."""

    def test_load_events_after_seq(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "r1")
            await store.runs.commit(lease, Turn(1, [event(n) for n in range(1, 6)]))
            assert [e.seq for e in await store.reads.history("r1", after_seq=3)] == [4, 5]
            assert [e.seq for e in await store.reads.history("r1", after_seq=-1)] == list(range(6))
            assert await store.reads.history("r1", after_seq=5) == []
            assert await store.reads.history("missing") == []

        run_with_store(store_factory, body)

    def test_get_runs_reads_the_rows_that_exist(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "p")
            await store.runs.commit(lease, Turn(1, [started(0)], children=[child_run("p/a", "p")]))
            assert await store.reads.get_runs([]) == {}
            rows = await store.reads.get_runs(["p/a", "missing", "p", "p/a"])
            assert sorted(rows) == ["p", "p/a"]
            assert rows["p/a"] == await get(store, "p/a")
            assert rows["p"] == await get(store, "p")

        run_with_store(store_factory, body)

    # -- listing -------------------------------------------------------------

    def test_list_runs_pages_cover_every_run_once(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            for i in range(23):
                await store.runs.create(new_run(f"r{i:02d}", "a" if i % 3 else "b"))
            seen: list[RunRecord] = []
            cursor = None
            while True:
                page = await store.reads.list_runs(limit=5, cursor=cursor)
                assert len(page.runs) <= 5
                seen.extend(page.runs)
                cursor = page.next_cursor
                if cursor is None:
                    break
                assert isinstance(cursor, str)
            assert sorted(r.run_id for r in seen) == [f"r{i:02d}" for i in range(23)]
            keys = [(r.created_at, r.run_id) for r in seen]
            assert keys == sorted(keys, reverse=True)
            assert (await store.reads.list_runs(limit=23)).next_cursor is None

        run_with_store(store_factory, body)

    def test_list_runs_orders_equal_times_by_run_id(
        self, clocked_store_factory: ClockedStoreFactory | None
    ) -> None:
        if clocked_store_factory is None:
            pytest.skip("the backend takes no injected clock")
        now = [1_000_000.0]
        factory = clocked_store_factory

        async def body(store: Store) -> None:
            for i in [3, 0, 4, 1, 2, 6, 5]:
                if i == 5:
                    now[0] += 1  # one run later than all others
                await store.runs.create(new_run(f"r{i}"))
            seen: list[str] = []
            cursor = None
            while True:
                page = await store.reads.list_runs(limit=2, cursor=cursor)
                seen.extend(r.run_id for r in page.runs)
                if (cursor := page.next_cursor) is None:
                    break
            assert seen == ["r5", "r6", "r4", "r3", "r2", "r1", "r0"]

        run_with_store(lambda: factory(lambda: now[0]), body)

    def test_list_runs_filters_by_workflow_and_state(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            for i in range(9):
                await store.runs.create(new_run(f"r{i}", "a" if i % 3 else "b"))
            for run_id in ("r1", "r3"):
                await store.runs.request_cancel(run_id, CANCELLED)

            async def ids(workflow: str | None = None, state: RunState | None = None) -> list[str]:
                out: list[str] = []
                cursor = None
                while True:
                    page = await store.reads.list_runs(
                        workflow=workflow, state=state, limit=2, cursor=cursor
                    )
                    out.extend(r.run_id for r in page.runs)
                    if (cursor := page.next_cursor) is None:
                        return sorted(out)

            assert await ids(workflow="b") == ["r0", "r3", "r6"]
            assert await ids(state=RunState.CANCELLED) == ["r1", "r3"]
            assert await ids(workflow="a", state=RunState.PENDING) == ["r2", "r4", "r5", "r7", "r8"]
            assert await ids(workflow="none") == []

        run_with_store(store_factory, body)

    def test_list_runs_and_count_runs_take_several_values_times_and_a_parent(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            for i in range(9):
                await store.runs.create(new_run(f"r{i}", "abc"[i % 3]))
            for parent, kids in (("p0", 2), ("p1", 1)):
                lease = await leased(store, parent)
                children = [child_run(f"{parent}/k{i}", parent) for i in range(kids)]
                await store.runs.commit(
                    lease, Turn(1, [started(i) for i in range(kids)], children=children)
                )
            for run_id in ("r1", "r4", "p0/k0"):
                await store.runs.request_cancel(run_id, CANCELLED)
            runs = {r.run_id: r for r in (await store.reads.list_runs(limit=100)).runs}
            times = sorted({r.created_at for r in runs.values()})
            since, until = times[2], times[-2]  # bounds from the stores' own clocks

            async def check(expected: Callable[[RunRecord], bool], **where: Any) -> None:
                want = sorted(i for i, r in runs.items() if expected(r))
                out: list[str] = []
                cursor = None
                while True:
                    page = await store.reads.list_runs(limit=2, cursor=cursor, **where)
                    out.extend(r.run_id for r in page.runs)
                    if (cursor := page.next_cursor) is None:
                        break
                assert sorted(out) == want, where
                assert await store.reads.count_runs(**where) == len(want), where

            cancelled, pending = RunState.CANCELLED, RunState.PENDING
            await check(lambda r: r.workflow in ("a", "b"), workflow=["a", "b"])
            await check(lambda r: r.workflow == "a", workflow=("a",))
            await check(lambda r: True, workflow=[])
            await check(lambda r: True)
            await check(lambda r: r.state in (cancelled, pending), state=[cancelled, pending])
            await check(lambda r: r.state is cancelled, state=["cancelled"])
            await check(
                lambda r: r.workflow in ("b", "child_wf") and r.state is cancelled,
                workflow={"b", "child_wf"},
                state=cancelled,
            )
            await check(lambda r: r.created_at >= since, since=since)
            await check(lambda r: r.created_at < until, until=until)
            await check(lambda r: since <= r.created_at < until, since=since, until=until)
            await check(
                lambda r: r.workflow == "c" and r.created_at >= since, workflow="c", since=since
            )
            await check(lambda r: r.parent_run_id == "p0", parent_run_id="p0")
            await check(
                lambda r: r.parent_run_id == "p0" and r.state is pending,
                parent_run_id="p0",
                state=pending,
            )
            await check(lambda r: False, parent_run_id="r5")
            assert await store.reads.count_runs(workflow="a") == 3
            assert await store.reads.count_runs(parent_run_id="p0") == 2

        run_with_store(store_factory, body)

    def test_list_runs_oldest_first_pages_cover_every_run_once_in_order(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            for i in range(13):
                await store.runs.create(new_run(f"r{i:02d}", "a" if i % 3 else "b"))
            times = sorted(r.created_at for r in (await store.reads.list_runs(limit=13)).runs)
            since, until = times[2], times[-3]  # the stores' own clocks
            ranges: list[dict[str, Any]] = [
                {"since": since},
                {"until": until},
                {"since": since, "until": until, "workflow": "a"},
            ]
            filters: list[dict[str, Any]] = [{}, {"workflow": "a"}, {"workflow": ["a", "b"]}]
            for where in [*filters, *ranges]:
                seen: list[RunRecord] = []
                cursor = None
                while True:
                    page = await store.reads.list_runs(
                        limit=4, cursor=cursor, oldest_first=True, **where
                    )
                    seen.extend(page.runs)
                    if (cursor := page.next_cursor) is None:
                        break
                keys = [(r.created_at, r.run_id) for r in seen]
                assert keys == sorted(keys), where
                newest = (await store.reads.list_runs(limit=100, **where)).runs
                assert [r.run_id for r in seen] == [r.run_id for r in reversed(newest)], where
                newest_paged: list[RunRecord] = []
                cursor = None
                while True:  # newest first in pages too: the range bounds the cursor
                    page = await store.reads.list_runs(limit=3, cursor=cursor, **where)
                    newest_paged.extend(page.runs)
                    if (cursor := page.next_cursor) is None:
                        break
                assert newest_paged == newest, where
                lo, hi = where.get("since", -math.inf), where.get("until", math.inf)
                assert all(lo <= r.created_at < hi for r in newest), where

        run_with_store(store_factory, body)

    def test_list_runs_sorted_by_end_workflow_and_state_pages_in_order(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            # Runs of three workflows in several states, some ended at one time.
            for i in range(9):
                await store.runs.create(new_run(f"r{i}", workflow=f"wf{'cab'[i % 3]}"))
            claimed = {
                c.run.run_id: c.lease for c in await store.runs.claim("w", limit=10, ttl=30.0)
            }
            for i, end in ((1, RunState.COMPLETED), (2, RunState.FAILED), (4, RunState.FAILED),
                           (5, RunState.COMPLETED), (7, RunState.CANCELLED)):  # fmt: skip
                await store.runs.commit(claimed[f"r{i}"], Turn(1, [], end=Finish(end)))
            await store.runs.commit(claimed["r3"], Turn(1, [], end=Suspend(None)))
            await store.runs.create(new_run("fresh", workflow="wfa"))
            rows = list(
                (await store.reads.get_runs([f"r{i}" for i in range(9)] + ["fresh"])).values()
            )

            async def paged(sort: Any, ascending: bool, **where: Any) -> list[str]:
                seen: list[str] = []
                cursor = None
                while True:
                    page = await store.reads.list_runs(
                        limit=2, cursor=cursor, sort=sort, oldest_first=ascending, **where
                    )
                    assert len(page.runs) <= 2
                    seen.extend(r.run_id for r in page.runs)
                    if (cursor := page.next_cursor) is None:
                        return seen

            keys: dict[str, Callable[[RunRecord], tuple[Any, ...]]] = {
                "ended": lambda r: (r.updated_at, r.run_id),
                "workflow": lambda r: (r.workflow, r.created_at, r.run_id),
                "state": lambda r: (r.state.value, r.created_at, r.run_id),
            }
            for sort, key in keys.items():
                listed = [r for r in rows if sort != "ended" or r.state.is_terminal]
                for ascending in (False, True):
                    want = [r.run_id for r in sorted(listed, key=key, reverse=not ascending)]
                    assert await paged(sort, ascending) == want, (sort, ascending)
            # Filters narrow a sorted list as they narrow the default one.
            failed = sorted((r for r in rows if r.state is RunState.FAILED), key=keys["workflow"])
            assert await paged("workflow", True, state=RunState.FAILED) == [
                r.run_id for r in failed
            ]
            wfa = [r for r in rows if r.workflow == "wfa" and r.state.is_terminal]
            assert await paged("ended", False, workflow="wfa") == [
                r.run_id for r in sorted(wfa, key=keys["ended"], reverse=True)
            ]
            assert await paged("ended", False, state=RunState.SUSPENDED) == []  # none ended
            # A cursor continues only the order it came from.
            page = await store.reads.list_runs(limit=1, sort="workflow")
            assert page.next_cursor is not None
            with pytest.raises(ConfigurationError, match="cursor"):
                await store.reads.list_runs(limit=1, sort="state", cursor=page.next_cursor)
            with pytest.raises(ConfigurationError, match="cursor"):
                await store.reads.list_runs(limit=1, cursor=page.next_cursor)
            with pytest.raises(ConfigurationError, match="sort"):
                await store.reads.list_runs(sort="duration")  # type: ignore[arg-type]

        run_with_store(store_factory, body)

    def test_count_runs_by_state_counts_each_state_under_the_filters(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            assert await store.reads.count_runs_by_state() == {}
            for i in range(7):
                await store.runs.create(new_run(f"r{i}", "a" if i % 2 else "b"))
            for run_id in ("r1", "r2", "r3"):
                await store.runs.request_cancel(run_id, CANCELLED)
            await leased(store, "r7")
            pending, cancelled = RunState.PENDING, RunState.CANCELLED
            counts = await store.reads.count_runs_by_state()
            assert counts == {pending: 4, cancelled: 3, RunState.RUNNING: 1}
            assert await store.reads.count_runs_by_state(workflow="a") == {cancelled: 2, pending: 1}
            assert await store.reads.count_runs_by_state(state=[cancelled]) == {cancelled: 3}
            assert await store.reads.count_runs_by_state(parent_run_id="r0") == {}

        run_with_store(store_factory, body)

    def test_list_runs_refuses_bad_filters(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            bad: list[dict[str, Any]] = [
                {"state": "sleeping"},
                {"state": ["pending", "nope"]},
                {"since": math.nan},
                {"until": math.inf},
                {"since": "yesterday"},
                {"workflow": [1, 2]},
                {"parent_run_id": 7},
            ]
            for where in bad:
                with pytest.raises(ConfigurationError):
                    await store.reads.list_runs(**where)
                with pytest.raises(ConfigurationError):
                    await store.reads.count_runs(**where)

        run_with_store(store_factory, body)

    def test_list_runs_validates_arguments(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            for bad in (0, -1, 1001):
                with pytest.raises(ValueError):
                    await store.reads.list_runs(limit=bad)
            with pytest.raises(ValueError):
                await store.reads.list_runs(cursor="not a cursor")
            assert (await store.reads.list_runs(limit=1000)).runs == []

        run_with_store(store_factory, body)

    # -- what metrics and health checks read -------------------------------------

    def test_first_event_is_the_run_started_row(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "r1")
            await store.runs.commit(lease, Turn(1, [event(1), event(2)]))
            first = await store.reads.first_event("r1")
            assert first is not None
            assert (first.seq, first.type, first.data) == (0, "run_started", b'{"n":1}')
            assert await store.reads.first_event("missing") is None

        run_with_store(store_factory, body)

    def test_run_stats_counts_states_and_finds_the_oldest_due_run(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            empty = await store.reads.run_stats()
            assert set(empty.by_state) == set(RunState)
            assert sum(empty.by_state.values()) == 0
            assert empty.oldest_due_at is None and empty.oldest_due_age == 0.0

            await store.runs.create(new_run("pending"))  # due at once
            now = await store.now()
            await suspended(store, "later", now + 3600)  # not due
            await finished(store, "done")
            await leased(store, "held")  # running under a live lease: not due
            stats = await store.reads.run_stats()
            assert stats.by_state[RunState.PENDING] == 1
            assert stats.by_state[RunState.SUSPENDED] == 1
            assert stats.by_state[RunState.COMPLETED] == 1
            assert stats.by_state[RunState.RUNNING] == 1
            assert stats.by_state[RunState.FAILED] == 0
            pending = await get(store, "pending")
            assert stats.oldest_due_at == pending.wake_at
            assert stats.now >= now and stats.oldest_due_age >= 0.0

            # A run whose lease expired is due from its expiry on, and counts
            # when it became due before the pending one.
            expired = await expired_lease(store, "orphan")
            stats = await store.reads.run_stats()
            assert pending.wake_at is not None
            assert stats.oldest_due_at == min(expired.expires_at, pending.wake_at)
            assert stats.by_state[RunState.RUNNING] == 2

        run_with_store(store_factory, body)
