"""Conformance of ``store.runs``: creating and claiming runs, the journal, fencing and
renewing leases, finishing (mixed into StoreConformance)."""

from __future__ import annotations

import asyncio
import time

import pytest

from keel.core.states import RunState
from keel.errors import (
    LeaseLostError,
    StoreError,
)
from keel.store.base import Lease
from keel.store.ports import Finish, Store, Suspend, Turn
from keel.testing.conformance_helpers import (
    CANCELLED,
    StoreFactory,
    assert_implements_the_ports,
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
    """Every backend creates, claims, journals, fences and finishes runs the same way."""

    # -- lifecycle -----------------------------------------------------------

    def test_open_and_close_are_idempotent(self, store_factory: StoreFactory) -> None:
        async def main() -> None:
            store = store_factory()
            assert_implements_the_ports(store)
            assert isinstance(store.url, str) and store.url
            await store.open()
            await store.open()
            await store.runs.create(new_run("r"))
            await store.close()
            await store.close()
            with pytest.raises(StoreError):
                await store.reads.get_run("r")

        asyncio.run(main())

    def test_now_is_the_epoch_clock(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            assert abs(await store.now() - time.time()) < 60

        run_with_store(store_factory, body)

    # -- create --------------------------------------------------------------

    def test_create_run_inserts_pending_run_and_started_event(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            before = await store.now()
            run, lease, created = await store.runs.create(new_run("r1", "orders", b'{"a":1}'))
            assert created and lease is None
            assert run == await store.reads.get_run("r1")
            assert (run.run_id, run.workflow, run.version) == ("r1", "orders", "v1")
            assert run.state is RunState.PENDING and run.input == b'{"a":1}'
            assert run.result is None and run.error is None
            assert run.next_seq == 1 and run.lease_token == 0 and run.lease_owner is None
            assert run.wake_at is not None and before <= run.wake_at <= await store.now()
            assert not run.cancel_requested
            [started] = await store.reads.history("r1")
            assert (started.run_id, started.seq, started.type) == ("r1", 0, "run_started")
            assert started.data == b'{"a":1}' and started.command is None
            assert await store.reads.get_run("nope") is None

        run_with_store(store_factory, body)

    def test_create_run_is_idempotent_and_writes_nothing(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            first, _, _ = await store.runs.create(new_run("r1", "wf", b'{"v":1}'))
            again, lease, created = await store.runs.create(
                new_run("r1", "other", b'{"v":2}'), lease_owner="w1"
            )
            assert not created and lease is None
            assert again == first == await store.reads.get_run("r1")
            assert len(await store.reads.history("r1")) == 1
            assert [r.run_id for r in (await store.reads.list_runs()).runs] == ["r1"]

        run_with_store(store_factory, body)

    def test_concurrent_duplicate_creates_create_exactly_one(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            results = await asyncio.gather(
                *(
                    store.runs.create(new_run("dup"), lease_owner=f"w{i}" if i % 2 else None)
                    for i in range(20)
                )
            )
            assert sum(created for _, _, created in results) == 1
            assert sum(lease is not None for _, lease, _ in results) <= 1
            assert len(await store.reads.history("dup")) == 1

        run_with_store(store_factory, body)

    def test_create_run_with_lease_is_running_and_not_claimable(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            before = await store.now()
            run, lease, created = await store.runs.create(
                new_run("r1"), lease_owner="w1", lease_ttl=30
            )
            assert created and lease is not None
            assert (lease.run_id, lease.owner) == ("r1", "w1") and lease.token >= 1
            assert before + 30 <= lease.expires_at <= await store.now() + 30
            assert run.state is RunState.RUNNING and run.lease_owner == "w1"
            assert (run.lease_token, run.lease_expires_at) == (lease.token, lease.expires_at)
            assert await claim_ids(store) == []
            await store.runs.commit(lease, Turn(1, [event(1)]))  # the lease is usable at once

        run_with_store(store_factory, body)

    # -- claims --------------------------------------------------------------

    def test_claim_takes_only_runnable_runs(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            now = await store.now()
            await store.runs.create(new_run("pending"))
            await leased(store, "running")
            await suspended(store, "sleeping", now + 3600)
            await suspended(store, "waiting-forever", None)
            await suspended(store, "due", now - 1)
            await finished(store, "done")
            await store.runs.create(new_run("cancelled"))
            await store.runs.request_cancel("cancelled", CANCELLED)
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
                await store.runs.create(new_run(f"r{i}"))
            first = await claim_ids(store, limit=3)
            second = await claim_ids(store, limit=3)
            third = await claim_ids(store, limit=3)
            assert (len(first), len(second), len(third)) == (3, 3, 1)
            assert sorted(first + second + third) == [f"r{i}" for i in range(7)]
            with pytest.raises(ValueError):
                await store.runs.claim("w", limit=0, ttl=30)
            with pytest.raises(ValueError):
                await store.runs.claim("w", limit=1, ttl=0)

        run_with_store(store_factory, body)

    def test_claim_returns_running_row_under_new_lease(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            created, _, _ = await store.runs.create(new_run("r1"))
            before = await store.now()
            [claimed] = await store.runs.claim("w9", limit=10, ttl=20)
            lease, run = claimed.lease, claimed.run
            assert (lease.run_id, lease.owner) == ("r1", "w9")
            assert lease.token > created.lease_token
            assert before + 20 <= lease.expires_at <= await store.now() + 20
            assert run == await store.reads.get_run("r1")
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
            [claimed] = await store.runs.claim("w2", limit=5, ttl=30)
            assert claimed.lease.run_id == "r1" and claimed.lease.owner == "w2"
            assert claimed.lease.token > old.token
            assert await claim_ids(store, "w3") == []  # the new lease is live

        run_with_store(store_factory, body)

    def test_every_claim_gets_a_strictly_larger_token(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await store.runs.create(new_run("r1"))
            tokens = []
            for turn in range(4):
                [claimed] = await store.runs.claim(f"w{turn}", limit=1, ttl=30)
                tokens.append(claimed.lease.token)
                now = await store.now()
                await store.runs.commit(claimed.lease, Turn(1, [], end=Suspend(now - 1)))
                run = await get(store, "r1")
                assert run.lease_owner is None and run.lease_expires_at is None
                assert run.lease_token == claimed.lease.token  # kept for the next claim
            assert tokens == sorted(set(tokens))

        run_with_store(store_factory, body)

    # -- journal -------------------------------------------------------------

    def test_append_assigns_contiguous_seqs(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "r1")
            await store.runs.commit(lease, Turn(1, [event(1)]))
            await store.runs.commit(lease, Turn(2, [event(2), event(3), event(4)]))
            await store.runs.commit(lease, Turn(5, []))
            events = await store.reads.history("r1")
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
            await store.runs.commit(lease, Turn(1, [event(1)]))
            for wrong in (1, 3, 0):
                writes = [
                    store.runs.commit(lease, Turn(wrong, [event(9)])),
                    store.runs.commit(lease, Turn(wrong, [event(9)], end=Suspend(None))),
                    store.runs.commit(
                        lease, Turn(wrong, [event(9)], end=Finish(RunState.COMPLETED))
                    ),
                ]
                for write in writes:
                    with pytest.raises(StoreError) as info:
                        await write
                    assert not isinstance(info.value, LeaseLostError), info.value
            run = await get(store, "r1")
            assert run.next_seq == 2 and run.state is RunState.RUNNING
            assert [e.seq for e in await store.reads.history("r1")] == [0, 1]
            await store.runs.commit(lease, Turn(2, [event(2)]))  # the lease still works

        run_with_store(store_factory, body)

    # -- finishing -----------------------------------------------------------

    def test_finish_run_ends_the_run(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            ok = await leased(store, "ok")
            bad = await leased(store, "bad")
            await store.mailbox.send("ok", "late", b"1")
            done = event(1, "run_completed")
            await store.runs.commit(
                ok, Turn(1, [done], end=Finish(RunState.COMPLETED, result=b'"yes"'))
            )
            await store.runs.commit(
                bad, Turn(1, [done], end=Finish(RunState.FAILED, error=b'{"e":1}'))
            )
            run = await get(store, "ok")
            assert (run.state, run.result, run.error) == (RunState.COMPLETED, b'"yes"', None)
            assert run.lease_owner is None and run.lease_expires_at is None
            assert run.wake_at is None and run.next_seq == 2
            failed = await get(store, "bad")
            assert (failed.state, failed.error) == (RunState.FAILED, b'{"e":1}')
            assert await claim_ids(store) == []
            with pytest.raises(ValueError):
                await store.runs.commit(ok, Turn(2, [], end=Finish(RunState.SUSPENDED)))

        run_with_store(store_factory, body)

    # -- fencing -------------------------------------------------------------

    def test_stale_append_is_rejected_and_changes_nothing(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            old = await expired_lease(store, "r1")
            sid = await store.mailbox.send("r1", "go", b"1")
            [claimed] = await store.runs.claim("w2", limit=1, ttl=30)
            before = await get(store, "r1")
            with pytest.raises(LeaseLostError) as info:
                await store.runs.commit(old, Turn(1, [event(1)], consume_signal=sid))
            assert info.value.run_id == "r1" and info.value.token == old.token
            assert len(await store.reads.history("r1")) == 1
            assert await get(store, "r1") == before
            signal = await store.mailbox.next("r1", "go")
            assert signal is not None and signal.id == sid  # not consumed
            await store.runs.commit(claimed.lease, Turn(1, [event(1)], consume_signal=sid))
            assert await store.mailbox.next("r1", "go") is None

        run_with_store(store_factory, body)

    def test_expired_lease_cannot_write_before_anyone_reclaims(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            lease = await expired_lease(store, "r1")
            before = await get(store, "r1")
            with pytest.raises(LeaseLostError):
                await store.runs.commit(lease, Turn(1, [event(1)]))
            with pytest.raises(LeaseLostError):
                await store.runs.commit(lease, Turn(1, [event(1)], end=Suspend(None)))
            with pytest.raises(LeaseLostError):
                await store.runs.commit(lease, Turn(1, [], end=Finish(RunState.COMPLETED)))
            assert await get(store, "r1") == before
            assert len(await store.reads.history("r1")) == 1

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
                    await store.runs.commit(bad, Turn(1, [event(1)]))
            assert len(await store.reads.history("r1")) == 1
            assert (await get(store, "r1")).next_seq == 1

        run_with_store(store_factory, body)

    def test_stale_suspend_is_rejected_and_changes_nothing(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            old = await expired_lease(store, "r1")
            await store.runs.claim("w2", limit=1, ttl=30)
            before = await get(store, "r1")
            with pytest.raises(LeaseLostError):
                await store.runs.commit(
                    old, Turn(1, [event(1)], end=Suspend(await store.now() + 60))
                )
            assert await get(store, "r1") == before
            assert before.state is RunState.RUNNING and before.lease_owner == "w2"
            assert len(await store.reads.history("r1")) == 1

        run_with_store(store_factory, body)

    def test_stale_finish_is_rejected_and_changes_nothing(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            old = await expired_lease(store, "r1")
            await store.runs.claim("w2", limit=1, ttl=30)
            before = await get(store, "r1")
            with pytest.raises(LeaseLostError):
                await store.runs.commit(
                    old,
                    Turn(
                        1, [event(1, "run_completed")], end=Finish(RunState.COMPLETED, result=b"1")
                    ),
                )
            assert await get(store, "r1") == before
            assert len(await store.reads.history("r1")) == 1

        run_with_store(store_factory, body)

    def test_lease_dies_with_suspend_and_finish(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            lease = await suspended(store, "r1", None)
            with pytest.raises(LeaseLostError):
                await store.runs.commit(lease, Turn(1, [event(1)]))
            done = await finished(store, "r2")
            with pytest.raises(LeaseLostError):
                await store.runs.commit(done, Turn(1, [event(1)]))
            with pytest.raises(LeaseLostError):
                await store.runs.commit(done, Turn(1, [], end=Finish(RunState.FAILED, error=b"x")))
            assert (await get(store, "r2")).state is RunState.COMPLETED

        run_with_store(store_factory, body)

    # -- renewals ------------------------------------------------------------

    def test_renew_extends_held_leases_and_reports_lost(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            held = await leased(store, "held", "w1", ttl=5)
            other = await leased(store, "other", "w2")
            done = await finished(store, "done")
            stale = await expired_lease(store, "stale", "w1")
            await store.runs.claim("w3", limit=10, ttl=30)  # takes "stale"
            expired = await expired_lease(store, "expired", "w1")
            before = await store.now()
            outcome = await store.runs.renew("w1", [held, other, done, stale, expired], 40)
            assert outcome.lost == {"other", "done", "stale", "expired"}
            assert outcome.cancel_requested == frozenset()
            assert before + 40 <= outcome.expires_at <= await store.now() + 40
            assert (await get(store, "held")).lease_expires_at == outcome.expires_at
            assert (await get(store, "other")).lease_expires_at == other.expires_at
            assert (await get(store, "expired")).lease_expires_at == expired.expires_at
            renewed = Lease("held", "w1", held.token, outcome.expires_at)
            await store.runs.commit(renewed, Turn(1, [event(1)]))
            assert (await store.runs.renew("w1", [], 10)).lost == frozenset()

        run_with_store(store_factory, body)

    def test_renew_reports_cancel_requests(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            a = await leased(store, "a")
            b = await leased(store, "b")
            assert await store.runs.request_cancel("a", CANCELLED) is RunState.RUNNING
            outcome = await store.runs.renew("w1", [a, b], 30)
            assert outcome.cancel_requested == {"a"} and outcome.lost == frozenset()

        run_with_store(store_factory, body)
