"""Conformance of ``store.admin``: operator actions (mixed into StoreConformance).

Each action is one transaction that fences off a worker holding the run; the
``*_races_a_live_worker`` tests run a real :class:`keel.Worker` on the store and
act while it is in the middle of a step: its next write must be refused and
nothing of it left behind.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

import keel.operations as operations
from keel.core.events import EventType
from keel.core.states import RunState
from keel.errors import (
    ConfigurationError,
    LeaseLostError,
    RunCancellingError,
    RunExistsError,
    RunFinishedError,
    RunNotFoundError,
    RunNotStuckError,
    StoreError,
)
from keel.operations import Forked
from keel.store.base import Lease, NewEvent, NewRun, NewTask
from keel.store.ports import Continue, Finish, Store, Suspend, Turn
from keel.testing.conformance_helpers import (
    CANCELLED,
    StoreFactory,
    child_run,
    claim_ids,
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
from keel.worker import Worker
from keel.workflow.definitions import step, workflow
from keel.workflow.registry import Registry

TERMINATED = NewEvent("run_terminated", None, b'{"reason":"test"}')


def fork_of(source: str, run_id: str, fork_seq: int) -> NewRun:
    """A fork of ``source`` below ``fork_seq`` (workflow ``wf``, as :func:`new_run`)."""
    data = b'{"n":1}'
    started_event = NewEvent("run_started", None, data)
    return NewRun(run_id, "wf", "v2", data, started_event, forked_from=source, fork_seq=fork_seq)


async def chain_of(
    store: Store,
    head: str,
    runs: int,
    end: RunState,
    *,
    lease: Lease | None = None,
    next_seq: int = 1,
) -> list[str]:
    """A continue-as-new chain of ``runs`` runs from ``head`` (created, or given
    leased at ``next_seq``), each continuing into the next, the last ending
    ``end``; its run ids."""
    current = lease if lease is not None else await leased(store, head)
    seq = next_seq
    ids = [head]
    for generation in range(1, runs):
        successor = NewRun(
            f"{head}/continue:{generation}",
            "wf",
            "v1",
            b"[]",
            NewEvent("run_started", None, b"[]"),
            chain_id=head,
            generation=generation,
        )
        await store.runs.commit(current, Turn(seq, [], end=Continue(successor)))
        ids.append(successor.run_id)
        [claimed] = [
            c for c in await store.runs.claim("w", limit=50, ttl=30) if c.run.run_id == ids[-1]
        ]
        current, seq = claimed.lease, 1
    await store.runs.commit(current, Turn(seq, [], end=Finish(end)))
    return ids


async def history_types(store: Store, run_id: str) -> list[str]:
    return [e.type for e in await store.reads.history(run_id)]


class AdminConformance:
    """Every backend terminates, resumes, forks and prunes runs alike."""

    # -- terminate ---------------------------------------------------------------------

    def test_terminate_ends_a_live_run_at_once(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await store.runs.create(new_run("pending"))
            await suspended(store, "asleep", (await store.now()) + 3600)
            held = await leased(store, "held")
            for run_id in ("pending", "asleep", "held"):
                before = await get(store, run_id)
                after = await store.admin.terminate(run_id, TERMINATED)
                assert after.state is RunState.TERMINATED
                assert after.next_seq == before.next_seq + 1
                assert after.wake_at is None and after.lease_owner is None
                assert after.lease_expires_at is None
                assert after.lease_token > before.lease_token  # a holder is fenced off
                last = (await store.reads.history(run_id))[-1]
                assert (last.seq, last.type, last.data) == (
                    before.next_seq,
                    "run_terminated",
                    TERMINATED.data,
                )
            # The holder's next write changes nothing, and its heartbeat finds it gone.
            with pytest.raises(LeaseLostError):
                await store.runs.commit(held, Turn(2, [event(2)]))
            assert len(await store.reads.history("held")) == 2
            outcome = await store.runs.renew(held.owner, [held], 30.0)
            assert outcome.lost == {"held"}
            assert await claim_ids(store) == []

        run_with_store(store_factory, body)

    def test_terminate_refuses_ended_and_unknown_runs(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await finished(store, "done")
            with pytest.raises(RunFinishedError):
                await store.admin.terminate("done", TERMINATED)
            with pytest.raises(RunNotFoundError):
                await store.admin.terminate("missing", TERMINATED)
            assert await history_types(store, "done") == ["run_started"]

        run_with_store(store_factory, body)

    def test_terminate_follows_a_chain_and_closes_the_family(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            grand = await leased(store, "grand")
            await store.runs.commit(
                grand, Turn(1, [started(0)], children=[child_run("p", "grand")])
            )
            [claimed] = [c for c in await store.runs.claim("w", limit=1, ttl=30) if c]
            assert claimed.run.run_id == "p"
            kids = [
                child_run("p/c", "p", "cancel", depth=2),
                child_run("p/a", "p", "abandon", depth=2),
                child_run("p/w", "p", "wait", depth=2),
            ]
            task = NewTask("step:s#9", "s", "q", 0, b"[]", 3)
            await store.runs.commit(
                claimed.lease,
                Turn(1, [started(n) for n in range(3)], children=kids, tasks=[task]),
            )
            await store.runs.commit(grand, Turn(2, [], end=Suspend(None)))
            ended = await store.admin.terminate("p", TERMINATED)
            assert ended.state is RunState.TERMINATED
            rows = await store.reads.get_runs(["p/c", "p/a", "p/w", "grand"])
            assert rows["p/c"].cancel_requested and rows["p/w"].cancel_requested
            assert not rows["p/a"].cancel_requested
            assert rows["grand"].wake_at is not None  # its parent is woken
            assert await store.tasks.get("p", "step:s#9") is None  # open tasks dropped

        run_with_store(store_factory, body)

    # -- resume ------------------------------------------------------------------------

    def test_resume_makes_a_waiting_run_due_now(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await suspended(store, "later", (await store.now()) + 3600)
            assert await claim_ids(store) == []
            resumed = await store.admin.resume("later", idle_for=60.0)
            assert resumed.state is RunState.SUSPENDED
            assert resumed.wake_at is not None and resumed.wake_at <= await store.now()
            assert await claim_ids(store) == ["later"]

        run_with_store(store_factory, body)

    def test_resume_appends_fired_timers_where_the_journal_ends(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "sleeper")
            timer = NewEvent("timer_started", "sleep:sleep#0", b'{"fire_at":1e12}')
            await store.runs.commit(lease, Turn(1, [timer], end=Suspend(1e12)))
            fired = [NewEvent("timer_fired", "sleep:sleep#0", b"{}")]
            with pytest.raises(StoreError, match="moved on"):
                await store.admin.resume("sleeper", idle_for=60, append=fired, at_seq=1)
            assert (await get(store, "sleeper")).next_seq == 2
            resumed = await store.admin.resume("sleeper", idle_for=60, append=fired, at_seq=2)
            assert resumed.next_seq == 3 and resumed.wake_at is not None
            assert await history_types(store, "sleeper") == [
                "run_started",
                "timer_started",
                "timer_fired",
            ]

        run_with_store(store_factory, body)

    def test_resume_takes_a_stuck_run_from_its_holder(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            held = await leased(store, "busy")
            await store.runs.commit(held, Turn(1, [event(1)]))
            with pytest.raises(RunNotStuckError):
                await store.admin.resume("busy", idle_for=60.0)
            row = await get(store, "busy")
            assert row.state is RunState.RUNNING and row.lease_token == held.token
            resumed = await store.admin.resume("busy", idle_for=None)  # forced
            assert resumed.state is RunState.SUSPENDED and resumed.lease_owner is None
            assert resumed.lease_token > held.token
            with pytest.raises(LeaseLostError):
                await store.runs.commit(held, Turn(2, [event(2)]))
            assert len(await store.reads.history("busy")) == 2
            [taken] = await store.runs.claim("w2", limit=5, ttl=30.0)
            assert taken.run.run_id == "busy" and taken.lease.token > resumed.lease_token
            # A dead holder's expired lease: stuck whatever idle_for says.
            await expired_lease(store, "dead")
            assert (await store.admin.resume("dead", idle_for=3600.0)).state is RunState.SUSPENDED

        run_with_store(store_factory, body)

    def test_resume_withdraws_an_undelivered_cancel_request(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "asked")
            later = Suspend((await store.now()) + 3600)
            await store.runs.commit(lease, Turn(1, [event(1)], end=later))
            assert await store.runs.request_cancel("asked", CANCELLED) is RunState.SUSPENDED
            resumed = await store.admin.resume("asked", idle_for=60.0)
            assert not resumed.cancel_requested
            # Delivered to the workflow (journaled): its cleanup runs; no withdrawing.
            held = await leased(store, "cleaning")
            await store.runs.request_cancel("cleaning", CANCELLED)
            cancel = NewEvent(EventType.CANCEL_REQUESTED.value, None, b"{}")
            await store.runs.commit(
                held, Turn(1, [cancel], end=Suspend(None, cancel_delivered=True))
            )
            with pytest.raises(RunCancellingError):
                await store.admin.resume("cleaning", idle_for=None)
            assert (await get(store, "cleaning")).cancel_requested
            await finished(store, "done")
            with pytest.raises(RunFinishedError):
                await store.admin.resume("done", idle_for=None)

        run_with_store(store_factory, body)

    # -- fork --------------------------------------------------------------------------

    def test_fork_copies_a_journal_and_its_later_signals(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            src = await leased(store, "src")
            early = await store.mailbox.send("src", "go", b"1", delivery_id="d1")
            late = await store.mailbox.send("src", "go", b"2")
            assert early is not None and late is not None
            await store.runs.commit(src, Turn(1, [event(1)], consume_signal=early))
            await store.runs.commit(src, Turn(2, [event(2), event(3)], consume_signal=late))
            await store.mailbox.send("src", "go", b"3", delivery_id="d3")
            await store.runs.commit(src, Turn(4, [], end=Finish(RunState.FAILED, error=b"{}")))
            before = await get(store, "src")
            copy = [event(1), event(2)]
            fork = await store.admin.fork(fork_of("src", "f1", 2), copy, redeliver_signals=True)
            assert fork.state is RunState.PENDING and fork.next_seq == 3
            assert (fork.forked_from, fork.fork_seq, fork.version) == ("src", 2, "v2")
            history = await store.reads.history("f1")
            assert [(e.seq, e.type, e.data) for e in history[1:]] == [
                (1, "step_completed", event(1).data),
                (2, "step_completed", event(2).data),
            ]
            # Consumed at seq 2 (not below the fork point) and never consumed: again, in order.
            first = await store.mailbox.next("f1", "go")
            assert first is not None and first.payload == b"2"
            assert await claim_ids(store) == ["f1"]
            assert [f.run_id for f in await store.admin.forks("src")] == ["f1"]
            # The fork's own chain knows the delivery id it got again.
            assert await store.mailbox.send("f1", "go", b"x", delivery_id="d3") is None
            assert await get(store, "src") == before  # the original is not changed
            plain = await store.admin.fork(fork_of("src", "f2", 4), [], redeliver_signals=False)
            assert plain.next_seq == 1 and await store.mailbox.next("f2", "go") is None

        run_with_store(store_factory, body)

    def test_fork_writes_nothing_when_refused(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await finished(store, "src")
            await store.runs.create(new_run("taken"))
            with pytest.raises(RunExistsError):
                await store.admin.fork(
                    fork_of("src", "taken", 1), [event(1)], redeliver_signals=True
                )
            assert await history_types(store, "taken") == ["run_started"]
            with pytest.raises(RunNotFoundError):
                await store.admin.fork(fork_of("gone", "f", 1), [], redeliver_signals=True)
            assert await store.reads.get_run("f") is None

        run_with_store(store_factory, body)

    # -- prune -------------------------------------------------------------------------

    def test_prune_deletes_ended_runs_with_what_they_own(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            for run_id in ("a", "b", "c"):
                lease = await leased(store, run_id)
                await store.mailbox.send(run_id, "s", b"1")
                await store.runs.commit(lease, Turn(1, [event(1)], end=Finish(RunState.FAILED)))
            await store.runs.create(new_run("live"))
            cutoff = await store.now() + 1
            assert await store.admin.prune(ended_before=cutoff, dry_run=True) == 3
            assert await store.admin.prune(ended_before=cutoff - 3600, dry_run=True) == 0
            assert await store.admin.prune(ended_before=cutoff, states=[RunState.COMPLETED]) == 0
            assert await store.admin.prune(ended_before=cutoff, limit=2) == 2
            assert await store.admin.prune(ended_before=cutoff, limit=2) == 1
            for run_id in ("a", "b", "c"):
                assert await store.reads.get_run(run_id) is None
                assert await store.reads.history(run_id) == []
                assert await store.mailbox.next(run_id, "s") is None
            assert (await get(store, "live")).state is RunState.PENDING

        run_with_store(store_factory, body)

    def test_prune_never_touches_a_running_child_or_a_live_chain(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            # An ended parent with a live child: neither goes; the child's end frees both.
            parent = await leased(store, "p")
            await store.runs.commit(
                parent, Turn(1, [started(0)], children=[child_run("p/k", "p", "abandon")])
            )
            await store.runs.commit(parent, Turn(2, [], end=Finish(RunState.COMPLETED)))
            # A live parent with an ended child: the child stays.
            live = await leased(store, "q")
            await store.runs.commit(live, Turn(1, [started(0)], children=[child_run("q/k", "q")]))
            [kid] = [
                c for c in await store.runs.claim("w", limit=5, ttl=30) if c.run.run_id == "q/k"
            ]
            await store.runs.commit(kid.lease, Turn(1, [], end=Finish(RunState.COMPLETED)))
            # A chain that continued into a live run: its ended head stays.
            head = await leased(store, "h")
            successor = NewRun(
                "h/continue:1",
                "wf",
                "v1",
                b"[]",
                NewEvent("run_started", None, b"[]"),
                chain_id="h",
                generation=1,
            )
            await store.runs.commit(head, Turn(1, [], end=Continue(successor)))
            cutoff = await store.now() + 1
            assert await store.admin.prune(ended_before=cutoff) == 0
            for run_id in ("p", "p/k", "q", "q/k", "h", "h/continue:1"):
                assert await store.reads.get_run(run_id) is not None, run_id
            # Once they have all ended, every one of them goes.
            await store.admin.terminate("p/k", TERMINATED)
            await store.admin.terminate("q", TERMINATED)
            await store.admin.terminate("h", TERMINATED)  # reaches the chain's live run
            cutoff = await store.now() + 1
            assert await store.admin.prune(ended_before=cutoff) == 6

        run_with_store(store_factory, body)

    def test_prune_takes_a_chain_whole_by_how_its_last_run_ended(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            failed = await chain_of(store, "f", 3, RunState.FAILED)
            done = await chain_of(store, "d", 2, RunState.COMPLETED)
            cutoff = await store.now() + 1
            with pytest.raises(ConfigurationError, match="pruned whole"):
                await store.admin.prune(ended_before=cutoff, states=[RunState.CONTINUED])
            # The failed chain's continued runs go with its failed last run.
            assert await store.admin.prune(ended_before=cutoff, states=[RunState.FAILED]) == 3
            for run_id in failed:
                assert await store.reads.get_run(run_id) is None, run_id
            for run_id in done:
                assert await store.reads.get_run(run_id) is not None, run_id
            # A batch that cuts a chain leaves nothing stranded: the rest goes next.
            assert await store.admin.prune(ended_before=cutoff, limit=1) == 1
            assert await store.admin.prune(ended_before=cutoff, limit=1) == 1
            assert await store.admin.prune(ended_before=cutoff) == 0
            for run_id in done:
                assert await store.reads.get_run(run_id) is None, run_id

        run_with_store(store_factory, body)

    def test_prune_keeps_a_chain_whole_while_any_run_of_it_has_a_live_child(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            # The chain's first run left an abandoned child running: the whole
            # chain stays (its last run too), then goes once the child has ended.
            head = await leased(store, "h")
            await store.runs.commit(
                head, Turn(1, [started(0)], children=[child_run("h/k", "h", "abandon")])
            )
            chain = await chain_of(store, "h", 2, RunState.FAILED, lease=head, next_seq=2)
            cutoff = await store.now() + 1
            assert await store.admin.prune(ended_before=cutoff, states=[RunState.FAILED]) == 0
            for run_id in chain:
                assert await store.reads.get_run(run_id) is not None, run_id
            await store.admin.terminate("h/k", TERMINATED)
            cutoff = await store.now() + 1
            assert await store.admin.prune(ended_before=cutoff, states=[RunState.FAILED]) == 2
            assert await store.admin.prune(ended_before=cutoff) == 1  # the child

        run_with_store(store_factory, body)

    # -- a real worker races each action -------------------------------------------------

    def test_terminate_races_a_live_worker(self, store_factory: StoreFactory) -> None:
        run_with_store(store_factory, lambda store: _race(store, "terminate"))

    def test_resume_races_a_live_worker(self, store_factory: StoreFactory) -> None:
        run_with_store(store_factory, lambda store: _race(store, "resume"))

    def test_bulk_terminate_races_a_live_worker(self, store_factory: StoreFactory) -> None:
        run_with_store(store_factory, lambda store: _race(store, "bulk_terminate"))

    def test_bulk_resume_races_a_live_worker(self, store_factory: StoreFactory) -> None:
        run_with_store(store_factory, lambda store: _race(store, "bulk_resume"))

    def test_fork_races_a_live_worker(self, store_factory: StoreFactory) -> None:
        run_with_store(store_factory, lambda store: _race(store, "fork"))


# -- the race: a workflow held in a step while the action happens -------------------------


class _Lost(logging.Handler):
    """Collects the run ids the worker logs a lost lease for."""

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        if "lease lost" in record.getMessage() and isinstance(args, tuple) and args:
            self.runs.append(str(args[0]))


@contextmanager
def _lost_leases() -> Iterator[_Lost]:
    handler = _Lost()
    logger = logging.getLogger("keel.worker")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


async def _until(condition: Callable[[], bool], what: str, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def _race(store: Store, action: str) -> None:
    registry = Registry()
    entered = asyncio.Event()
    release = asyncio.Event()
    ran: list[str] = []

    @step(registry=registry, name=f"conformance_first_{action}")
    async def first(n: int) -> int:
        ran.append("first")
        return n + 1

    @step(registry=registry, name=f"conformance_held_{action}")
    async def held(n: int) -> int:
        ran.append("held")
        if len(ran) <= 2:  # the original's attempt waits for the action
            entered.set()
            await release.wait()
        return n * 10

    @workflow(registry=registry, name=f"conformance_race_{action}")
    async def flow(n: int) -> int:
        value: int = await held(await first(n))
        return value

    with _lost_leases() as lost:
        worker = Worker(store, registry=registry, poll_interval=0.05, owner="racer")
        async with worker:
            client = worker.client()
            handle = await client.start(flow, 1, run_id=f"race-{action}")
            try:
                await asyncio.wait_for(entered.wait(), 20)
                before = await store.reads.history(handle.run_id)
                forked = await _act(store, registry, action, handle.run_id, len(before))
            finally:
                release.set()
            if action == "fork":
                # The original is not disturbed; the fork reuses its first step.
                assert forked is not None
                assert await handle.result(timeout=20) == 20
                assert await client.result(forked.run.run_id, timeout=20) == 20
                assert ran.count("first") == 1
                fork_history = await store.reads.history(forked.run.run_id)
                assert [e.data for e in fork_history[1 : 1 + forked.copied]] == [
                    e.data for e in before[1 : 1 + forked.copied]
                ]
                return
            await _until(lambda: handle.run_id in lost.runs, "the worker's write to be refused")
            after = await store.reads.history(handle.run_id)
            row = await get(store, handle.run_id)
            if action in ("terminate", "bulk_terminate"):
                # Exactly the journal before, and the termination: nothing of the step.
                assert [e.type for e in after] == [e.type for e in before] + ["run_terminated"]
                assert row.state is RunState.TERMINATED and row.next_seq == len(after)
                return
            # Resumed: taken from the racer, replayed, the held step run again, completed.
            assert await handle.result(timeout=20) == 20
            done = await store.reads.history(handle.run_id)
            assert [e.type for e in done].count("step_completed") == 2
            assert ran.count("held") == 2 and ran.count("first") == 1


async def _act(
    store: Store, registry: Registry, action: str, run_id: str, journaled: int
) -> Forked | None:
    if action == "terminate":
        await operations.terminate(store, run_id, "racing")
    elif action == "resume":
        await operations.resume(store, run_id, force=True)
    elif action.startswith("bulk_"):
        # One page, selected by the filter, acted on in one store transaction.
        act = operations.bulk_act(action.removeprefix("bulk_"), reason="racing", force=True)
        page = await store.admin.bulk(act, where={"workflow": f"conformance_race_{action}"})
        assert [r.run_id for r in page.done] == [run_id] and page.refused == []
        assert page.next_cursor is None
    else:  # a copy of everything journaled so far: the first step's result
        return await operations.fork(
            store,
            registry,
            run_id,
            journaled,
            new_run_id=f"{run_id}-fork",
            version=None,
            redeliver_signals=True,
            retry=False,
        )
    return None
