"""Conformance tests for run lifecycle, creation, claims, the journal, finishing and listing
(mixed into StoreConformance)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

import pytest

from keel.core.states import RunState
from keel.errors import ConfigurationError, LeaseLostError, StoreError
from keel.store.base import RunRecord, Store
from keel.testing.conformance_children import child_run, started
from keel.testing.conformance_helpers import (
    CANCELLED,
    ClockedStoreFactory,
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
)


class RunConformance:
    """Every backend creates, claims, journals, finishes and lists runs the same way."""

    # -- lifecycle -------------------------------------------------------------------

    def test_open_and_close_are_idempotent(self, store_factory: StoreFactory) -> None:
        async def main() -> None:
            store = store_factory()
            assert isinstance(store, Store)
            assert isinstance(store.url, str) and store.url
            await store.open()
            await store.open()
            await store.create_run(new_run("r"))
            await store.close()
            await store.close()
            with pytest.raises(StoreError):
                await store.get_run("r")

        asyncio.run(main())

    def test_now_is_the_epoch_clock(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            assert abs(await store.now() - time.time()) < 60

        run_with_store(store_factory, body)

    # -- create ----------------------------------------------------------------------

    def test_create_run_inserts_pending_run_and_started_event(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            before = await store.now()
            run, lease, created = await store.create_run(new_run("r1", "orders", b'{"a":1}'))
            assert created and lease is None
            assert run == await store.get_run("r1")
            assert (run.run_id, run.workflow, run.version) == ("r1", "orders", "v1")
            assert run.state is RunState.PENDING and run.input == b'{"a":1}'
            assert run.result is None and run.error is None
            assert run.next_seq == 1 and run.lease_token == 0 and run.lease_owner is None
            assert run.wake_at is not None and before <= run.wake_at <= await store.now()
            assert not run.cancel_requested
            [started] = await store.load_events("r1")
            assert (started.run_id, started.seq, started.type) == ("r1", 0, "run_started")
            assert started.data == b'{"a":1}' and started.command is None
            assert await store.get_run("nope") is None

        run_with_store(store_factory, body)

    def test_create_run_is_idempotent_and_writes_nothing(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            first, _, _ = await store.create_run(new_run("r1", "wf", b'{"v":1}'))
            again, lease, created = await store.create_run(
                new_run("r1", "other", b'{"v":2}'), lease_owner="w1"
            )
            assert not created and lease is None
            assert again == first == await store.get_run("r1")
            assert len(await store.load_events("r1")) == 1
            assert [r.run_id for r in (await store.list_runs()).runs] == ["r1"]

        run_with_store(store_factory, body)

    def test_concurrent_duplicate_creates_create_exactly_one(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            results = await asyncio.gather(
                *(
                    store.create_run(new_run("dup"), lease_owner=f"w{i}" if i % 2 else None)
                    for i in range(20)
                )
            )
            assert sum(created for _, _, created in results) == 1
            assert sum(lease is not None for _, lease, _ in results) <= 1
            assert len(await store.load_events("dup")) == 1

        run_with_store(store_factory, body)

    def test_create_run_with_lease_is_running_and_not_claimable(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            before = await store.now()
            run, lease, created = await store.create_run(
                new_run("r1"), lease_owner="w1", lease_ttl=30
            )
            assert created and lease is not None
            assert (lease.run_id, lease.owner) == ("r1", "w1") and lease.token >= 1
            assert before + 30 <= lease.expires_at <= await store.now() + 30
            assert run.state is RunState.RUNNING and run.lease_owner == "w1"
            assert (run.lease_token, run.lease_expires_at) == (lease.token, lease.expires_at)
            assert await claim_ids(store) == []
            await store.append_events(lease, 1, [event(1)])  # the lease is usable at once

        run_with_store(store_factory, body)

    # -- claims ----------------------------------------------------------------------

    def test_claim_takes_only_runnable_runs(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            now = await store.now()
            await store.create_run(new_run("pending"))
            await leased(store, "running")
            await suspended(store, "sleeping", now + 3600)
            await suspended(store, "waiting-forever", None)
            await suspended(store, "due", now - 1)
            await finished(store, "done")
            await store.create_run(new_run("cancelled"))
            await store.request_cancel("cancelled", CANCELLED)
            assert sorted(await claim_ids(store)) == ["due", "pending"]
            assert await claim_ids(store) == []

        run_with_store(store_factory, body)

    def test_claim_respects_wake_at(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            now = await store.now()
            await suspended(store, "later", now + 3600)
            assert await claim_ids(store) == []
            later = await get(store, "later")
            assert later.state is RunState.SUSPENDED and later.wake_at == now + 3600
            await suspended(store, "past", now - 0.5)
            assert await claim_ids(store) == ["past"]

        run_with_store(store_factory, body)

    def test_claim_takes_runs_in_wake_at_order(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            now = await store.now()
            for run_id, ago in [("b", 2), ("d", 1), ("a", 3), ("c", 1.5)]:
                await suspended(store, run_id, now - ago)
            assert await claim_ids(store, limit=1) == ["a"]
            assert await claim_ids(store, limit=2) == ["b", "c"]
            assert await claim_ids(store, limit=5) == ["d"]

        run_with_store(store_factory, body)

    def test_claim_honours_limit(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            for i in range(7):
                await store.create_run(new_run(f"r{i}"))
            first = await claim_ids(store, limit=3)
            second = await claim_ids(store, limit=3)
            third = await claim_ids(store, limit=3)
            assert (len(first), len(second), len(third)) == (3, 3, 1)
            assert sorted(first + second + third) == [f"r{i}" for i in range(7)]
            with pytest.raises(ValueError):
                await store.claim_runs("w", limit=0, ttl=30)
            with pytest.raises(ValueError):
                await store.claim_runs("w", limit=1, ttl=0)

        run_with_store(store_factory, body)

    def test_claim_returns_running_row_under_new_lease(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            created, _, _ = await store.create_run(new_run("r1"))
            before = await store.now()
            [claimed] = await store.claim_runs("w9", limit=10, ttl=20)
            lease, run = claimed.lease, claimed.run
            assert (lease.run_id, lease.owner) == ("r1", "w9")
            assert lease.token > created.lease_token
            assert before + 20 <= lease.expires_at <= await store.now() + 20
            assert run == await store.get_run("r1")
            assert run.state is RunState.RUNNING and run.lease_owner == "w9"
            assert (run.lease_token, run.lease_expires_at) == (lease.token, lease.expires_at)
            assert (run.input, run.next_seq, run.created_at) == (
                created.input,
                1,
                created.created_at,
            )

        run_with_store(store_factory, body)

    def test_expired_lease_is_reclaimed_with_larger_token(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            old = await expired_lease(store, "r1")
            [claimed] = await store.claim_runs("w2", limit=5, ttl=30)
            assert claimed.lease.run_id == "r1" and claimed.lease.owner == "w2"
            assert claimed.lease.token > old.token
            assert await claim_ids(store, "w3") == []  # the new lease is live

        run_with_store(store_factory, body)

    def test_every_claim_gets_a_strictly_larger_token(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await store.create_run(new_run("r1"))
            tokens = []
            for turn in range(4):
                [claimed] = await store.claim_runs(f"w{turn}", limit=1, ttl=30)
                tokens.append(claimed.lease.token)
                now = await store.now()
                await store.suspend_run(claimed.lease, 1, [], wake_at=now - 1)
                run = await get(store, "r1")
                assert run.lease_owner is None and run.lease_expires_at is None
                assert run.lease_token == claimed.lease.token  # kept for the next claim
            assert tokens == sorted(set(tokens))

        run_with_store(store_factory, body)

    # -- journal ---------------------------------------------------------------------

    def test_append_assigns_contiguous_seqs(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "r1")
            await store.append_events(lease, 1, [event(1)])
            await store.append_events(lease, 2, [event(2), event(3), event(4)])
            await store.append_events(lease, 5, [])
            events = await store.load_events("r1")
            assert [e.seq for e in events] == [0, 1, 2, 3, 4]
            assert [e.command for e in events[1:]] == [f"step:s#{n}" for n in range(1, 5)]
            assert events[3].data == b'{"n":3}' and events[3].type == "step_completed"
            assert all(e.run_id == "r1" for e in events)
            assert (await get(store, "r1")).next_seq == 5

        run_with_store(store_factory, body)

    def test_first_seq_mismatch_is_a_store_error_and_writes_nothing(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "r1")
            await store.append_events(lease, 1, [event(1)])
            for wrong in (1, 3, 0):
                writes = [
                    store.append_events(lease, wrong, [event(9)]),
                    store.suspend_run(lease, wrong, [event(9)], wake_at=None),
                    store.finish_run(lease, wrong, [event(9)], state=RunState.COMPLETED),
                ]
                for write in writes:
                    with pytest.raises(StoreError) as info:
                        await write
                    assert not isinstance(info.value, LeaseLostError), info.value
            run = await get(store, "r1")
            assert run.next_seq == 2 and run.state is RunState.RUNNING
            assert [e.seq for e in await store.load_events("r1")] == [0, 1]
            await store.append_events(lease, 2, [event(2)])  # the lease still works

        run_with_store(store_factory, body)

    def test_load_events_after_seq(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "r1")
            await store.append_events(lease, 1, [event(n) for n in range(1, 6)])
            assert [e.seq for e in await store.load_events("r1", after_seq=3)] == [4, 5]
            assert [e.seq for e in await store.load_events("r1", after_seq=-1)] == list(range(6))
            assert await store.load_events("r1", after_seq=5) == []
            assert await store.load_events("missing") == []

        run_with_store(store_factory, body)

    # -- finishing -------------------------------------------------------------------

    def test_finish_run_ends_the_run(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            ok = await leased(store, "ok")
            bad = await leased(store, "bad")
            await store.send_signal("ok", "late", b"1")
            done = event(1, "run_completed")
            await store.finish_run(ok, 1, [done], state=RunState.COMPLETED, result=b'"yes"')
            await store.finish_run(bad, 1, [done], state=RunState.FAILED, error=b'{"e":1}')
            run = await get(store, "ok")
            assert (run.state, run.result, run.error) == (RunState.COMPLETED, b'"yes"', None)
            assert run.lease_owner is None and run.lease_expires_at is None
            assert run.wake_at is None and run.next_seq == 2
            failed = await get(store, "bad")
            assert (failed.state, failed.error) == (RunState.FAILED, b'{"e":1}')
            assert await claim_ids(store) == []
            with pytest.raises(ValueError):
                await store.finish_run(ok, 2, [], state=RunState.SUSPENDED)

        run_with_store(store_factory, body)

    # -- listing ---------------------------------------------------------------------

    def test_list_runs_pages_cover_every_run_once(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            for i in range(23):
                await store.create_run(new_run(f"r{i:02d}", "a" if i % 3 else "b"))
            seen: list[RunRecord] = []
            cursor = None
            while True:
                page = await store.list_runs(limit=5, cursor=cursor)
                assert len(page.runs) <= 5
                seen.extend(page.runs)
                cursor = page.next_cursor
                if cursor is None:
                    break
                assert isinstance(cursor, str)
            assert sorted(r.run_id for r in seen) == [f"r{i:02d}" for i in range(23)]
            keys = [(r.created_at, r.run_id) for r in seen]
            assert keys == sorted(keys, reverse=True)
            assert (await store.list_runs(limit=23)).next_cursor is None

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
                await store.create_run(new_run(f"r{i}"))
            seen: list[str] = []
            cursor = None
            while True:
                page = await store.list_runs(limit=2, cursor=cursor)
                seen.extend(r.run_id for r in page.runs)
                if (cursor := page.next_cursor) is None:
                    break
            assert seen == ["r5", "r6", "r4", "r3", "r2", "r1", "r0"]

        run_with_store(lambda: factory(lambda: now[0]), body)

    def test_list_runs_filters_by_workflow_and_state(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            for i in range(9):
                await store.create_run(new_run(f"r{i}", "a" if i % 3 else "b"))
            for run_id in ("r1", "r3"):
                await store.request_cancel(run_id, CANCELLED)

            async def ids(workflow: str | None = None, state: RunState | None = None) -> list[str]:
                out: list[str] = []
                cursor = None
                while True:
                    page = await store.list_runs(
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
                await store.create_run(new_run(f"r{i}", "abc"[i % 3]))
            for parent, kids in (("p0", 2), ("p1", 1)):
                lease = await leased(store, parent)
                children = [child_run(f"{parent}/k{i}", parent) for i in range(kids)]
                await store.start_children(lease, 1, [started(i) for i in range(kids)], children)
            for run_id in ("r1", "r4", "p0/k0"):
                await store.request_cancel(run_id, CANCELLED)
            runs = {r.run_id: r for r in (await store.list_runs(limit=100)).runs}
            times = sorted({r.created_at for r in runs.values()})
            since, until = times[2], times[-2]  # bounds from the stores' own clocks

            async def check(expected: Callable[[RunRecord], bool], **where: Any) -> None:
                want = sorted(i for i, r in runs.items() if expected(r))
                out: list[str] = []
                cursor = None
                while True:
                    page = await store.list_runs(limit=2, cursor=cursor, **where)
                    out.extend(r.run_id for r in page.runs)
                    if (cursor := page.next_cursor) is None:
                        break
                assert sorted(out) == want, where
                assert await store.count_runs(**where) == len(want), where

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
            assert await store.count_runs(workflow="a") == 3
            assert await store.count_runs(parent_run_id="p0") == 2

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
                    await store.list_runs(**where)
                with pytest.raises(ConfigurationError):
                    await store.count_runs(**where)

        run_with_store(store_factory, body)

    def test_list_runs_validates_arguments(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            for bad in (0, -1, 1001):
                with pytest.raises(ValueError):
                    await store.list_runs(limit=bad)
            with pytest.raises(ValueError):
                await store.list_runs(cursor="not a cursor")
            assert (await store.list_runs(limit=1000)).runs == []

        run_with_store(store_factory, body)
