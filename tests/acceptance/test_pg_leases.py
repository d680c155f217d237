"""Fencing on PostgreSQL: a stolen lease makes every write of the old holder
fail and change nothing, and racing claimers claim a run exactly once.

The worker-level tests expire a lease directly in SQL (the database clock is
the only clock that counts) and let a second ``keel worker`` claim the run;
the store-level tests drive :class:`PostgresStore` objects in this process.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import astuple
from pathlib import Path

import pytest

from keel.core.states import RunState
from keel.errors import LeaseLostError
from keel.store import Lease, NewEvent, RunRecord
from keel.store.ports import Finish, Suspend, Turn
from keel.store.postgres import PostgresStore
from keel.testing.conformance import event, new_run
from tests.acceptance.apps import pg_flows
from tests.acceptance.harness import Harness, WorkerProcess, step_completions
from tests.pg import pg_url, postgres_server  # noqa: F401  (fixtures)

pytestmark = pytest.mark.acceptance

PG_FLOWS = "tests.acceptance.apps.pg_flows"
EXPIRE = (
    "UPDATE keel.runs SET lease_expires_at = extract(epoch FROM clock_timestamp()) - 1"
    " WHERE run_id = %s AND state = 'running' RETURNING lease_token"
)
LEASE_ROW = "SELECT lease_owner, lease_token, lease_expires_at FROM keel.runs WHERE run_id = %s"


@pytest.fixture
def harness(tmp_path: Path, pg_url: str) -> Iterator[Harness]:  # noqa: F811
    h = Harness(tmp_path, db_url=pg_url)
    try:
        yield h
    finally:
        h.cleanup()


def ready(proc: WorkerProcess) -> bool:
    return " started: " in proc.err.read_text(errors="replace")


def pid_of(owner: str | None) -> int | None:
    """The pid inside a worker's lease owner name (``host:pid:random``)."""
    return None if owner is None else int(owner.split(":")[-2])


async def steal_setup(
    harness: Harness, run_id: str, holder_ttl: float
) -> tuple[WorkerProcess, WorkerProcess, int, int]:
    """Worker A runs ``accpg.steal`` into its gated step; its lease is expired in
    SQL; worker B claims the run and enters the same step. Returns A, B and the
    tokens of A's and B's leases."""
    # A never polls (it is woken by the NOTIFY of the new run), so it cannot
    # claim the run back itself once its lease is expired.
    a = harness.worker(PG_FLOWS, lease_ttl=holder_ttl, poll_interval=300.0)
    await harness.wait_for(lambda: ready(a), "worker A", alive=(a,))
    async with harness.client() as client:
        await client.start(pg_flows.steal, "g", run_id=run_id)

    def started_by(proc: WorkerProcess) -> bool:
        return any(
            e.step == "accpg.held" and e.phase == "start" and e.pid == proc.pid
            for e in harness.executions()
        )

    await harness.wait_for(lambda: started_by(a), "A to start the gated step", alive=(a,))
    [(owner_a, token_a, _expires)] = await harness.sql(LEASE_ROW, (run_id,))
    assert pid_of(owner_a) == a.pid
    assert await harness.sql(EXPIRE, (run_id,)) == [(token_a,)]

    b = harness.worker(PG_FLOWS, lease_ttl=60.0, poll_interval=0.05)
    await harness.wait_for(lambda: started_by(b), "B to claim and start the step", alive=(a, b))
    [(owner_b, token_b, _expires)] = await harness.sql(LEASE_ROW, (run_id,))
    assert pid_of(owner_b) == b.pid
    assert token_b > token_a, "a claim must take a strictly larger fencing token"
    return a, b, token_a, token_b


async def test_stolen_lease_rejects_the_old_holders_append(harness: Harness) -> None:
    """A's lease is expired and B claims the run while A's step still runs:
    when A's step returns, A's append is rejected with LeaseLostError and
    writes nothing; A stops working on the run; B's result is the one
    journaled and the run completes under B."""
    run_id = "steal-1"
    # A long TTL: A's heartbeat (every TTL/3) must not notice the theft first,
    # so that A really tries to write.
    a, b, token_a, token_b = await steal_setup(harness, run_id, holder_ttl=60.0)
    async with harness.client() as client:
        before = await client.history(run_id)
        assert step_completions(before) == Counter()

        harness.open_gate(f"g-{a.pid}")
        lost = (
            f"run {run_id} (workflow accpg.steal): lease lost (a journal write was refused: "
            f"lease on run '{run_id}' with token {token_a}"
        )
        await harness.wait_for(
            lambda: lost in a.err.read_text(), "A's append to be rejected", alive=(a, b)
        )
        assert f"with token {token_b}" in a.err.read_text(), a.output()
        assert any(
            e.step == "accpg.held" and e.phase == "end" and e.pid == a.pid
            for e in harness.executions()
        ), "A's step body did not return"
        assert await client.history(run_id) == before, "the rejected append wrote something"
        [(owner, token, _expires)] = await harness.sql(LEASE_ROW, (run_id,))
        assert (pid_of(owner), token) == (b.pid, token_b)

        harness.open_gate(f"g-{b.pid}")
        infos = await harness.wait_finished(client, [run_id], timeout=10, alive=(a, b))
        result = await client.result(run_id)
        history = await client.history(run_id)

    assert infos[run_id].state == "completed", infos[run_id].error
    assert result == {"held_by": b.pid, "after_by": b.pid}
    assert step_completions(history) == Counter({"accpg.held": 1, "accpg.after": 1})
    [held] = [e for e in history if e.type == "step_completed" and e.name == "accpg.held"]
    assert held.data["result"] == b.pid
    assert history[: len(before)] == before
    pids = Counter((e.step, e.pid) for e in harness.executions() if e.phase == "start")
    assert pids == Counter(
        {("accpg.held", a.pid): 1, ("accpg.held", b.pid): 1, ("accpg.after", b.pid): 1}
    )
    assert a.alive(), a.output()
    assert "lease lost" not in b.err.read_text(), b.output()


async def test_heartbeat_finding_the_lease_taken_stops_the_holder(harness: Harness) -> None:
    """With a 3 s TTL A heartbeats every second: after the theft A's heartbeat
    reports the lease lost and A drops the run at once, without trying to
    write A's late step result; the run completes under B."""
    run_id = "steal-2"
    a, b, token_a, _token_b = await steal_setup(harness, run_id, holder_ttl=3.0)
    await harness.wait_for(
        lambda: (
            f"run {run_id} (workflow accpg.steal): lease lost (the heartbeat found it gone)"
            in a.err.read_text()
        ),
        "A's heartbeat to find the lease taken",
        timeout=3.0,  # one heartbeat interval (1 s) and some slack
        alive=(a, b),
    )
    harness.open_gate(f"g-{a.pid}")
    await harness.wait_for(
        lambda: any(
            e.step == "accpg.held" and e.phase == "end" and e.pid == a.pid
            for e in harness.executions()
        ),
        "A's step body to return",
        alive=(a, b),
    )
    harness.open_gate(f"g-{b.pid}")
    async with harness.client() as client:
        infos = await harness.wait_finished(client, [run_id], timeout=10, alive=(a, b))
        result = await client.result(run_id)
        history = await client.history(run_id)

    assert infos[run_id].state == "completed", infos[run_id].error
    assert result == {"held_by": b.pid, "after_by": b.pid}
    assert step_completions(history) == Counter({"accpg.held": 1, "accpg.after": 1})
    # A was cancelled by its heartbeat: it never even tried to append.
    assert "a journal write was refused" not in a.err.read_text(), a.output()
    assert f"token {token_a}" not in a.err.read_text(), a.output()
    assert not [e for e in harness.executions() if e.step == "accpg.after" and e.pid == a.pid]
    assert a.alive(), a.output()


# --- store level -------------------------------------------------------------------------


def row(record: RunRecord | None) -> tuple[object, ...]:
    assert record is not None
    return astuple(record)


async def test_stale_holder_cannot_append_finish_or_cancel(harness: Harness) -> None:
    """After another claim, every write through the stale lease (append,
    suspend, complete, cancel, renew) is refused with LeaseLostError and leaves
    the journal and the run row exactly as they were; the new holder then
    writes at the very seq the stale writes tried to take."""
    url = harness.db_url
    a, b = PostgresStore(url, application_name="stale-a"), PostgresStore(url)
    await a.open()
    await b.open()
    try:
        run_id = "stale-1"
        _rec, lease_a, created = await a.runs.create(new_run(run_id), lease_owner="A", lease_ttl=30)
        assert created and lease_a is not None
        await a.runs.commit(lease_a, Turn(1, [event(1)]))

        # Expired but not yet claimed again: already refused.
        assert await harness.sql(EXPIRE, (run_id,)) == [(lease_a.token,)]
        with pytest.raises(LeaseLostError, match="expired"):
            await a.runs.commit(lease_a, Turn(2, [event(2)]))

        [claimed] = await b.runs.claim("B", limit=10, ttl=30)
        lease_b = claimed.lease
        assert (lease_b.run_id, lease_b.owner) == (run_id, "B")
        assert lease_b.token > lease_a.token
        journal = await b.reads.history(run_id)
        record = row(await b.reads.get_run(run_id))

        cancelled = NewEvent("run_cancelled", None, b'{"reason":"cancel requested"}')
        stale_writes: dict[str, Callable[[], Awaitable[None]]] = {
            "append": lambda: a.runs.commit(lease_a, Turn(2, [event(2)])),
            "append at a wrong seq": lambda: a.runs.commit(lease_a, Turn(5, [event(5)])),
            "suspend": lambda: a.runs.commit(lease_a, Turn(2, [event(2)], end=Suspend(None))),
            "complete": lambda: a.runs.commit(
                lease_a,
                Turn(2, [event(2, "run_completed")], end=Finish(RunState.COMPLETED, result=b"1")),
            ),
            "cancel": lambda: a.runs.commit(
                lease_a, Turn(2, [cancelled], end=Finish(RunState.CANCELLED))
            ),
            "fail": lambda: a.runs.commit(
                lease_a, Turn(2, [event(2, "run_failed")], end=Finish(RunState.FAILED, error=b"{}"))
            ),
        }
        for what, write in stale_writes.items():
            with pytest.raises(LeaseLostError, match=f"token {lease_b.token}") as caught:
                await write()
            assert caught.value.token == lease_a.token, what
            assert await b.reads.history(run_id) == journal, f"stale {what} changed the journal"
            assert row(await b.reads.get_run(run_id)) == record, f"stale {what} changed the run row"
        renewed = await a.runs.renew("A", [lease_a], 30)
        assert renewed.lost == {run_id}
        assert row(await b.reads.get_run(run_id)) == record, "a stale renewal changed the run row"
        # A lease forged with B's token but A's name is no better.
        forged = Lease(run_id, "A", lease_b.token, lease_b.expires_at)
        with pytest.raises(LeaseLostError):
            await a.runs.commit(forged, Turn(2, [event(2)]))

        await b.runs.commit(lease_b, Turn(2, [event(2)]))
        await b.runs.commit(
            lease_b, Turn(3, [event(3, "run_completed")], end=Finish(RunState.COMPLETED))
        )
        assert [e.seq for e in await b.reads.history(run_id)] == [0, 1, 2, 3]
        with pytest.raises(LeaseLostError, match="completed"):
            await a.runs.commit(lease_a, Turn(4, [cancelled], end=Finish(RunState.CANCELLED)))
        assert [e.seq for e in await b.reads.history(run_id)] == [0, 1, 2, 3]
    finally:
        await a.close()
        await b.close()


@pytest.mark.timeout(60)
async def test_racing_claims_claim_a_run_exactly_once(harness: Harness) -> None:
    """Eight stores (eight connections) claim at the same moment, 30 times over,
    with one runnable run each time (new, or with an expired lease): exactly
    one claim gets it, under a token larger than every earlier one."""
    url = harness.db_url
    stores = [PostgresStore(url, min_size=1, max_size=1) for _ in range(8)]
    await asyncio.gather(*(s.open() for s in stores))
    maker = stores[0]
    try:
        last_token = 0
        for round_ in range(30):
            run_id = f"race-{round_:02d}"
            if round_ % 2:  # a dead worker's run: claimable because its lease expired
                _r, lease, _c = await maker.runs.create(new_run(run_id), lease_owner="dead")
                assert lease is not None
                assert await harness.sql(EXPIRE, (run_id,)) == [(lease.token,)]
                last_token = max(last_token, lease.token)
            else:
                await maker.runs.create(new_run(run_id))
            results = await asyncio.gather(
                *(s.runs.claim(f"w{i}", limit=4, ttl=30) for i, s in enumerate(stores))
            )
            winners = [(i, c) for i, got in enumerate(results) for c in got]
            assert len(winners) == 1, f"round {round_}: {len(winners)} claims: {winners}"
            [(i, claimed)] = winners
            assert claimed.run.run_id == run_id
            assert claimed.lease.token > last_token
            last_token = claimed.lease.token
            record = await maker.reads.get_run(run_id)
            assert record is not None
            assert (record.state, record.lease_owner, record.lease_token) == (
                RunState.RUNNING,
                f"w{i}",
                claimed.lease.token,
            )
    finally:
        await asyncio.gather(*(s.close() for s in stores))
