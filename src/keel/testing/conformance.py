"""The store conformance suite: the behaviour every Keel store backend must have.

Subclass :class:`StoreConformance` and provide a ``store_factory`` fixture that
returns a callable making a new, unopened store over an empty database::

    import pytest
    from keel.testing.conformance import StoreConformance

    class TestMyStore(StoreConformance):
        @pytest.fixture
        def store_factory(self, tmp_path):
            return lambda: MyStore(tmp_path / "keel.db")

Tests are plain functions running their body with ``asyncio.run`` (no pytest
plugin needed). Times are always relative to ``await store.now()``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from keel.core.states import RunState
from keel.errors import LeaseLostError, RunFinishedError, RunNotFoundError, StoreError
from keel.store.base import Lease, NewEvent, NewRun, RunRecord, Store
from keel.testing.conformance_keys import IdempotencyConformance
from keel.testing.conformance_tasks import TaskConformance

StoreFactory = Callable[[], Store]
ClockedStoreFactory = Callable[[Callable[[], float]], Store]
Body = Callable[[Store], Awaitable[None]]

CANCELLED = NewEvent("run_cancelled", None, b"{}")
SHORT_TTL = 0.05  # seconds; tests wait for expiry on the store clock, never sleep blindly


def new_run(run_id: str, workflow: str = "wf", data: bytes = b'{"n":1}') -> NewRun:
    """A run whose ``started`` event carries ``data`` as its input."""
    return NewRun(run_id, workflow, "v1", data, NewEvent("run_started", None, data))


def event(n: int, kind: str = "step_completed") -> NewEvent:
    """A distinguishable journal event."""
    return NewEvent(kind, f"step:s#{n}", f'{{"n":{n}}}'.encode())


def run_with_store(factory: StoreFactory, body: Body) -> None:
    """Open a new store, run ``body`` on a fresh event loop, close the store."""

    async def main() -> None:
        store = factory()
        await store.open()
        try:
            await body(store)
        finally:
            await store.close()

    asyncio.run(main())


async def leased(store: Store, run_id: str, owner: str = "w1", ttl: float = 30.0) -> Lease:
    """Create ``run_id`` already leased to ``owner``."""
    _, lease, created = await store.create_run(new_run(run_id), lease_owner=owner, lease_ttl=ttl)
    assert created and lease is not None
    return lease


async def suspended(store: Store, run_id: str, wake_at: float | None) -> Lease:
    """Create ``run_id`` and suspend it until ``wake_at``; return the dropped lease."""
    lease = await leased(store, run_id)
    await store.suspend_run(lease, 1, [], wake_at=wake_at)
    return lease


async def finished(store: Store, run_id: str) -> Lease:
    """Create ``run_id`` and complete it."""
    lease = await leased(store, run_id)
    await store.finish_run(lease, 1, [], state=RunState.COMPLETED, result=b"1")
    return lease


async def wait_until_past(store: Store, moment: float, limit: float = 10.0) -> None:
    """Return once the store clock has passed ``moment`` (a lease expiry)."""
    deadline = time.monotonic() + limit
    while await store.now() <= moment:
        assert time.monotonic() < deadline, "store clock did not pass the moment in time"
        await asyncio.sleep(0.005)


async def expired_lease(store: Store, run_id: str, owner: str = "w1") -> Lease:
    """Create ``run_id`` leased with a short ttl and wait until that lease expired."""
    lease = await leased(store, run_id, owner, ttl=SHORT_TTL)
    await wait_until_past(store, lease.expires_at)
    return lease


async def claim_ids(store: Store, owner: str = "w2", limit: int = 100) -> list[str]:
    return [c.lease.run_id for c in await store.claim_runs(owner, limit=limit, ttl=30.0)]


async def get(store: Store, run_id: str) -> RunRecord:
    run = await store.get_run(run_id)
    assert run is not None
    return run


class StoreConformance(IdempotencyConformance, TaskConformance):
    """Behaviour shared by every backend; subclasses supply ``store_factory``."""

    @pytest.fixture
    def store_factory(self) -> StoreFactory:
        raise NotImplementedError("subclasses provide a store_factory fixture")

    @pytest.fixture
    def clocked_store_factory(self) -> ClockedStoreFactory | None:
        """Override if the backend accepts an injected clock (``None``: those tests skip)."""
        return None

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

    # -- signals ---------------------------------------------------------------------

    def test_signals_are_buffered_and_fifo_per_name(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await store.create_run(new_run("r1"))
            await store.create_run(new_run("r2"))
            a1 = await store.send_signal("r1", "a", b"1")
            b1 = await store.send_signal("r1", "b", b"2")
            a2 = await store.send_signal("r1", "a", b"3")
            await store.send_signal("r2", "a", b"other run")
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

    def test_list_runs_validates_arguments(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            for bad in (0, -1, 1001):
                with pytest.raises(ValueError):
                    await store.list_runs(limit=bad)
            with pytest.raises(ValueError):
                await store.list_runs(cursor="not a cursor")
            assert (await store.list_runs(limit=1000)).runs == []

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
