"""Conformance tests for dispatched-step tasks (mixed into StoreConformance).

Task leases are short where a test needs one to expire, and tests wait for the
expiry on the store clock (``wait_until_past``), never for a guessed time.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import pytest

from keel.core.states import RunState
from keel.errors import LeaseLostError, StoreError
from keel.store.base import Lease, NewEvent, NewTask, TaskLease, TaskRecord
from keel.store.ports import Continue, Finish, Store, Suspend, Turn
from keel.testing.conformance_helpers import (
    SHORT_TTL,
    StoreFactory,
    expired_lease,
    get,
    leased,
    run_with_store,
    wait_until_past,
)


def new_task(
    command: str, *, queue: str = "q", priority: int = 0, max_attempts: int = 3
) -> NewTask:
    return NewTask(command, "render", queue, priority, f'["{command}"]'.encode(), max_attempts)


def scheduled(task: NewTask) -> NewEvent:
    """The journal event a worker writes with a dispatch."""
    return NewEvent("step_dispatched", task.command, b"{}")


async def dispatched(
    store: Store, run_id: str, tasks: Sequence[NewTask], *, suspend: bool = False
) -> tuple[Lease, list[int]]:
    """Create ``run_id`` leased to w1 and dispatch ``tasks`` at seq 1 (then suspend it
    without a wake-up time if ``suspend``: only a task outcome can wake it)."""

    lease = await leased(store, run_id)
    ids = (
        await store.runs.commit(lease, Turn(1, [scheduled(t) for t in tasks], tasks=tasks))
    ).task_ids
    if suspend:
        await store.runs.commit(lease, Turn(1 + len(tasks), [], end=Suspend(None)))
    return lease, ids


async def task_of(store: Store, run_id: str, command: str) -> TaskRecord:
    task = await store.tasks.get(run_id, command)
    assert task is not None
    return task


async def claim_one(store: Store, owner: str = "t1", ttl: float = 30.0) -> TaskLease:
    [(lease, _)] = await store.tasks.claim(owner, ["q"], limit=1, ttl=ttl)
    return lease


async def run_ids_claimable(store: Store) -> list[str]:
    return [c.lease.run_id for c in await store.runs.claim("w2", limit=100, ttl=30.0)]


class TaskConformance:
    """Every backend dispatches, leases, expires, completes and fails tasks alike."""

    def test_task_finished_while_run_held_wakes_it_at_suspend(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            # The task completes while its run is still leased: nothing to wake then,
            # so a Suspend(wake_on_tasks=...) must leave the run due at once.
            lease, _ = await dispatched(store, "r1", [new_task("step:a#0")])
            await store.tasks.complete(await claim_one(store), b'"A"')
            await store.runs.commit(
                lease, Turn(2, [], end=Suspend(None, wake_on_tasks=["step:a#0"]))
            )
            assert await run_ids_claimable(store) == ["r1"]
            # Without naming the task (or naming another), the run stays asleep.
            lease2, _ = await dispatched(store, "r2", [new_task("step:b#0")])
            await store.tasks.complete(await claim_one(store), b'"B"')
            await store.runs.commit(
                lease2, Turn(2, [], end=Suspend(None, wake_on_tasks=["step:x#0"]))
            )
            assert await run_ids_claimable(store) == []

        run_with_store(store_factory, body)

    # -- dispatch ----------------------------------------------------------------------

    def test_dispatch_appends_events_and_inserts_tasks(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            before = await store.now()
            tasks = [new_task("step:a#0", queue="img", priority=2), new_task("step:b#0")]
            _, ids = await dispatched(store, "r1", tasks)
            assert len(ids) == 2 and len(set(ids)) == 2 and ids == sorted(ids)
            events = await store.reads.history("r1")
            assert [(e.seq, e.type, e.command) for e in events[1:]] == [
                (1, "step_dispatched", "step:a#0"),
                (2, "step_dispatched", "step:b#0"),
            ]
            run = await store.reads.get_run("r1")
            assert run is not None and run.next_seq == 3
            a = await task_of(store, "r1", "step:a#0")
            assert (
                a.task_id == ids[0] and (await task_of(store, "r1", "step:b#0")).task_id == ids[1]
            )
            assert (a.run_id, a.command, a.step, a.queue, a.priority) == (
                "r1",
                "step:a#0",
                "render",
                "img",
                2,
            )
            assert a.args == b'["step:a#0"]' and a.max_attempts == 3
            assert (a.state, a.attempt) == ("available", 1)
            assert before <= a.created_at == a.available_at <= await store.now()
            assert a.lease_owner is None and a.lease_expires_at is None
            assert a.result is None and a.error is None
            assert await store.tasks.get("r1", "step:zz#0") is None
            assert await store.tasks.get("nope", "step:a#0") is None

        run_with_store(store_factory, body)

    def test_stale_dispatch_is_rejected_and_writes_nothing(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:

            old = await expired_lease(store, "r1")
            [claimed] = await store.runs.claim("w2", limit=1, ttl=30)
            before = await get(store, "r1")
            task = new_task("step:a#0")
            with pytest.raises(LeaseLostError) as info:
                await store.runs.commit(old, Turn(1, [scheduled(task)], tasks=[task]))
            assert info.value.run_id == "r1" and info.value.token == old.token
            with pytest.raises(StoreError):  # the new holder, at the wrong seq
                await store.runs.commit(claimed.lease, Turn(5, [scheduled(task)], tasks=[task]))
            assert await get(store, "r1") == before
            assert len(await store.reads.history("r1")) == 1
            assert await store.tasks.get("r1", "step:a#0") is None
            assert await store.tasks.claim("t1", ["q"], limit=10, ttl=30) == []

        run_with_store(store_factory, body)

    def test_duplicate_task_rejects_the_whole_dispatch(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:

            lease, [first] = await dispatched(store, "r1", [new_task("step:a#0")])
            before = await get(store, "r1")
            again = [new_task("step:b#0"), new_task("step:a#0")]
            with pytest.raises(StoreError):
                await store.runs.commit(lease, Turn(2, [scheduled(t) for t in again], tasks=again))
            twice = [new_task("step:c#0"), new_task("step:c#0")]
            with pytest.raises(StoreError):
                await store.runs.commit(lease, Turn(2, [scheduled(t) for t in twice], tasks=twice))
            assert await get(store, "r1") == before
            assert len(await store.reads.history("r1")) == 2
            assert await store.tasks.get("r1", "step:b#0") is None
            assert await store.tasks.get("r1", "step:c#0") is None
            assert (await task_of(store, "r1", "step:a#0")).task_id == first
            # The same command in another run is another task.
            _, [other] = await dispatched(store, "r2", [new_task("step:a#0")])
            assert other != first

        run_with_store(store_factory, body)

    # -- claims ------------------------------------------------------------------------

    def test_claim_leases_tasks_by_priority_then_age(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            tasks = [
                new_task("step:low#0", priority=0),
                new_task("step:high#0", priority=5),
                new_task("step:mid#0", priority=1),
                new_task("step:high#1", priority=5),
            ]
            _, ids = await dispatched(store, "r1", tasks)
            # Dispatched later: same priority as the first two, but younger.
            _, [late] = await dispatched(store, "r2", [new_task("step:late#0", priority=5)])
            before = await store.now()
            claimed = await store.tasks.claim("t1", ["q"], limit=10, ttl=30)
            assert [t.task_id for _, t in claimed] == [ids[1], ids[3], late, ids[2], ids[0]]
            for lease, task in claimed:
                assert (lease.task_id, lease.owner, lease.attempt) == (task.task_id, "t1", 1)
                assert task.state == "leased" and task.lease_owner == "t1"
                assert task.lease_expires_at == lease.expires_at
                assert before + 30 <= lease.expires_at <= await store.now() + 30
                assert await task_of(store, task.run_id, task.command) == task
            assert await store.tasks.claim("t2", ["q"], limit=10, ttl=30) == []

        run_with_store(store_factory, body)

    def test_claim_filters_by_queue_and_honours_limit(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            tasks = [new_task(f"step:s#{i}", queue="abc"[i % 3]) for i in range(9)]
            await dispatched(store, "r1", tasks)
            assert await store.tasks.claim("t1", [], limit=10, ttl=30) == []
            first = await store.tasks.claim("t1", ["a", "b"], limit=4, ttl=30)
            rest = await store.tasks.claim("t1", ["b", "a"], limit=4, ttl=30)
            assert len(first) == 4 and len(rest) == 2
            assert {t.queue for _, t in first + rest} == {"a", "b"}
            assert len({t.task_id for _, t in first + rest}) == 6
            c = await store.tasks.claim("t2", {"c"}, limit=100, ttl=30)
            assert sorted(t.command for _, t in c) == ["step:s#2", "step:s#5", "step:s#8"]
            with pytest.raises(ValueError):
                await store.tasks.claim("t1", ["a"], limit=0, ttl=30)

        run_with_store(store_factory, body)

    def test_concurrent_claimers_get_each_task_once(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await dispatched(store, "r1", [new_task(f"step:s#{i}") for i in range(40)])

            async def claimer(owner: str) -> list[int]:
                got: list[int] = []
                for _ in range(8):
                    claimed = await store.tasks.claim(owner, ["q"], limit=3, ttl=30)
                    got += [t.task_id for _, t in claimed]
                return got

            results = await asyncio.gather(*(claimer(f"t{i}") for i in range(8)))
            claimed = [task_id for got in results for task_id in got]
            assert len(claimed) == 40 and len(set(claimed)) == 40

        run_with_store(store_factory, body)

    # -- expiry --------------------------------------------------------------------------

    def test_expired_task_lease_consumes_an_attempt(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:

            await dispatched(store, "r1", [new_task("step:a#0")])
            old = await claim_one(store, "t1", ttl=SHORT_TTL)
            await wait_until_past(store, old.expires_at)
            new = await claim_one(store, "t2")  # the sweep frees it; this claim takes it
            assert (new.task_id, new.attempt, new.owner) == (old.task_id, 2, "t2")
            task = await task_of(store, "r1", "step:a#0")
            assert (task.state, task.attempt, task.lease_owner) == ("leased", 2, "t2")
            assert task.error is not None
            assert "expired on attempt 1" in json.loads(task.error)["message"]
            for stale in (old, TaskLease(old.task_id, "t2", 1, new.expires_at)):
                with pytest.raises(LeaseLostError) as info:
                    await store.tasks.complete(stale, b'"late"')
                assert info.value.task_id == old.task_id and info.value.run_id == "r1"
            assert await task_of(store, "r1", "step:a#0") == task
            await store.tasks.complete(new, b'"ok"')
            assert (await task_of(store, "r1", "step:a#0")).result == b'"ok"'

        run_with_store(store_factory, body)

    def test_expired_leases_are_swept_in_batches_of_500(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:

            await dispatched(store, "r1", [new_task(f"step:s#{i}") for i in range(501)])
            leases = await store.tasks.claim("t1", ["q"], limit=501, ttl=SHORT_TTL)
            assert len(leases) == 501
            await wait_until_past(store, max(lease.expires_at for lease, _ in leases))
            # Claims of another queue take nothing but sweep: 500, then the rest.
            assert await store.tasks.claim("t2", ["other"], limit=1, ttl=30) == []
            [info] = await store.tasks.list_queues()
            assert (info.available, info.leased) == (500, 1)
            await store.tasks.claim("t2", ["other"], limit=1, ttl=30)
            [info] = await store.tasks.list_queues()
            assert (info.available, info.leased) == (501, 0)

        run_with_store(store_factory, body)

    def test_expired_last_attempt_fails_the_task_and_wakes_the_run(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:

            await dispatched(store, "r1", [new_task("step:a#0", max_attempts=2)], suspend=True)
            first = await claim_one(store, "t1", ttl=SHORT_TTL)
            await wait_until_past(store, first.expires_at)
            second = await claim_one(store, "t1", ttl=SHORT_TTL)
            assert second.attempt == 2
            assert await run_ids_claimable(store) == []  # a retry does not wake the run
            await wait_until_past(store, second.expires_at)
            # Any claim sweeps every queue's expired leases, even one finding nothing.
            assert await store.tasks.claim("t3", ["other"], limit=1, ttl=30) == []
            task = await task_of(store, "r1", "step:a#0")
            assert (task.state, task.attempt, task.lease_owner) == ("failed", 2, None)
            assert task.lease_expires_at is None and task.result is None
            assert task.error is not None
            error = json.loads(task.error)
            assert error["type"] == "keel.errors.StepTimeoutError"
            assert "expired on attempt 2" in error["message"]
            assert "no attempts are left" in error["message"]
            assert await store.tasks.claim("t3", ["q"], limit=1, ttl=30) == []
            assert await run_ids_claimable(store) == ["r1"]
            with pytest.raises(LeaseLostError):
                await store.tasks.complete(second, b'"late"')

        run_with_store(store_factory, body)

    # -- outcomes ------------------------------------------------------------------------

    def test_complete_task_stores_the_result_and_wakes_the_run(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            await dispatched(store, "r1", [new_task("step:a#0")], suspend=True)
            assert await run_ids_claimable(store) == []
            lease = await claim_one(store)
            await store.tasks.complete(lease, b'{"png":1}')
            task = await task_of(store, "r1", "step:a#0")
            assert (task.state, task.result, task.attempt) == ("completed", b'{"png":1}', 1)
            assert task.lease_owner is None and task.lease_expires_at is None
            run = await store.reads.get_run("r1")
            assert run is not None and run.wake_at is not None
            assert run.wake_at <= await store.now()
            assert await run_ids_claimable(store) == ["r1"]
            assert await store.tasks.claim("t2", ["q"], limit=1, ttl=30) == []
            with pytest.raises(LeaseLostError):  # completed once
                await store.tasks.complete(lease, b'"again"')

        run_with_store(store_factory, body)

    def test_complete_task_leaves_a_running_run_alone(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:

            run_lease, _ = await dispatched(store, "r1", [new_task("step:a#0")])
            await store.tasks.complete(await claim_one(store), b"1")
            run = await get(store, "r1")
            assert run.state is RunState.RUNNING and run.lease_token == run_lease.token
            await store.runs.commit(run_lease, Turn(2, []))  # still the holder's

        run_with_store(store_factory, body)

    def test_stale_task_writes_are_rejected_and_change_nothing(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:

            tasks = [new_task("step:a#0"), new_task("step:b#0", queue="q2")]
            await dispatched(store, "r1", tasks)
            # An older attempt: attempt 1 failed and was retried as attempt 2.
            a1 = await claim_one(store, "t1")
            await store.tasks.fail(a1, b'{"e":1}', retry_at=await store.now())
            a2 = await claim_one(store, "t1")
            assert (a2.task_id, a2.attempt) == (a1.task_id, 2)
            # Another owner; and an expired lease nobody has swept yet (no claim
            # runs after it expires).
            foreign = TaskLease(a2.task_id, "t9", 2, a2.expires_at)
            [(b, _)] = await store.tasks.claim("t1", ["q2"], limit=1, ttl=SHORT_TTL)
            await wait_until_past(store, b.expires_at)
            before_a = await task_of(store, "r1", "step:a#0")
            before_b = await task_of(store, "r1", "step:b#0")
            before_run = await get(store, "r1")
            for stale in (a1, foreign, b):
                with pytest.raises(LeaseLostError) as info:
                    await store.tasks.complete(stale, b'"stale"')
                assert info.value.task_id == stale.task_id
                with pytest.raises(LeaseLostError):
                    await store.tasks.fail(stale, b'{"e":2}', retry_at=None)
                with pytest.raises(LeaseLostError):
                    await store.tasks.fail(stale, b'{"e":2}', retry_at=await store.now())
            with pytest.raises(LeaseLostError, match="does not exist"):
                await store.tasks.complete(TaskLease(10**9, "t1", 1, a2.expires_at), b"1")
            assert await task_of(store, "r1", "step:a#0") == before_a
            assert await task_of(store, "r1", "step:b#0") == before_b
            assert await get(store, "r1") == before_run

        run_with_store(store_factory, body)

    def test_fail_task_with_retry_at_retries_from_then(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:

            tasks = [new_task("step:soon#0"), new_task("step:later#0")]
            await dispatched(store, "r1", tasks, suspend=True)
            soon, later = [
                lease for lease, _ in await store.tasks.claim("t1", ["q"], limit=2, ttl=30)
            ]
            now = await store.now()
            await store.tasks.fail(soon, b'{"e":"soon"}', retry_at=now + SHORT_TTL)
            await store.tasks.fail(later, b'{"e":"later"}', retry_at=now + 3600)
            task = await task_of(store, "r1", "step:soon#0")
            assert (task.state, task.attempt, task.available_at) == (
                "available",
                2,
                now + SHORT_TTL,
            )
            assert task.error == b'{"e":"soon"}' and task.lease_owner is None
            assert await run_ids_claimable(store) == []  # a retry does not wake the run
            await wait_until_past(store, now + SHORT_TTL)
            [(again, record)] = await store.tasks.claim("t2", ["q"], limit=5, ttl=30)
            assert (again.task_id, again.attempt, record.command) == (
                soon.task_id,
                2,
                "step:soon#0",
            )
            assert (await task_of(store, "r1", "step:later#0")).state == "available"

        run_with_store(store_factory, body)

    def test_fail_task_without_retry_fails_for_good_and_wakes_the_run(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            await dispatched(store, "r1", [new_task("step:a#0")], suspend=True)
            lease = await claim_one(store)
            await store.tasks.fail(lease, b'{"type":"ValueError"}', retry_at=None)
            task = await task_of(store, "r1", "step:a#0")
            assert (task.state, task.attempt, task.error) == ("failed", 1, b'{"type":"ValueError"}')
            assert task.lease_owner is None and task.lease_expires_at is None
            assert await run_ids_claimable(store) == ["r1"]
            assert await store.tasks.claim("t1", ["q"], limit=1, ttl=30) == []

        run_with_store(store_factory, body)

    def test_fail_task_on_the_last_attempt_fails_for_good(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            await dispatched(store, "r1", [new_task("step:a#0", max_attempts=1)], suspend=True)
            lease = await claim_one(store)
            await store.tasks.fail(lease, b'{"e":1}', retry_at=await store.now())
            task = await task_of(store, "r1", "step:a#0")
            assert (task.state, task.attempt) == ("failed", 1)
            assert await run_ids_claimable(store) == ["r1"]

        run_with_store(store_factory, body)

    # -- heartbeats ----------------------------------------------------------------------

    def test_renew_task_leases_extends_held_ones_and_reports_lost(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:

            tasks = [new_task("step:a#0"), new_task("step:b#0"), new_task("step:c#0")]
            await dispatched(store, "r1", tasks)
            short = await claim_one(store, "t1", ttl=SHORT_TTL)
            held = await claim_one(store, "t1", ttl=5)
            other = await claim_one(store, "t2", ttl=30)
            await wait_until_past(store, short.expires_at)
            before = await store.now()
            lost = await store.tasks.renew("t1", [short, held, other], ttl=30)
            assert lost == {short.task_id, other.task_id}
            task = await task_of(store, "r1", "step:b#0")
            assert task.lease_expires_at is not None and task.lease_expires_at >= before + 30
            assert (await task_of(store, "r1", "step:c#0")).lease_expires_at == other.expires_at
            assert await store.tasks.renew("t1", [], ttl=30) == frozenset()
            # The renewed lease still writes; the expired one was not revived.
            await store.tasks.complete(TaskLease(held.task_id, "t1", 1, before + 30), b"1")
            with pytest.raises(LeaseLostError):
                await store.tasks.complete(short, b"1")

        run_with_store(store_factory, body)

    @pytest.mark.parametrize("end", ["finish", "continue"])
    def test_a_run_that_ends_discards_its_open_tasks(
        self, store_factory: StoreFactory, end: str
    ) -> None:
        async def body(store: Store) -> None:
            from keel.testing.conformance_continue import successor

            commands = ["step:a#0", "step:b#0", "step:c#0"]
            lease, _ = await dispatched(store, "r1", [new_task(c) for c in commands])
            await store.tasks.complete(await claim_one(store), b'"A"')  # a: done, kept
            held = await claim_one(store, "t2")  # b: running on a task worker
            ended = NewEvent("run_cancelled", None, b"{}")
            if end == "finish":
                await store.runs.commit(lease, Turn(4, [ended], end=Finish(RunState.CANCELLED)))
            else:
                run = await store.reads.get_run("r1")
                assert run is not None
                await store.runs.commit(lease, Turn(4, [ended], end=Continue(successor(run))))
            # c is never claimed; b's worker learns at its heartbeat and stops.
            assert await store.tasks.claim("t3", ["q"], limit=10, ttl=30) == []
            assert await store.tasks.renew("t2", [held], 30) == frozenset({held.task_id})
            with pytest.raises(LeaseLostError):
                await store.tasks.complete(held, b'"B"')
            assert (await task_of(store, "r1", "step:a#0")).state == "completed"
            assert await store.tasks.get("r1", "step:c#0") is None
            assert await store.tasks.list_queues() == []  # nothing open is counted

        run_with_store(store_factory, body)
