"""Real ``keel worker`` processes sharing one PostgreSQL database: splitting the
work, SIGKILL under load, SIGTERM drain.

Each test gets a fresh database cloned from the migrated template (``pg_url``),
so it skips loudly without a server, and fails under ``CI=true``. Executions
are counted from the step bodies' own log, never from the journal.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest

import keel
from tests.acceptance.apps import flows, pg_flows
from tests.acceptance.harness import FLOWS, Execution, Harness, WorkerProcess, step_completions
from tests.pg import pg_url, postgres_server  # noqa: F401  (fixtures)

pytestmark = pytest.mark.acceptance

PG_FLOWS = "tests.acceptance.apps.pg_flows"
THREE = pg_flows.CHAIN[:3]


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


def command_name(command: str) -> str:
    """The name in a journaled command id (``kind:name#ordinal``)."""
    return command.partition(":")[2].rpartition("#")[0]


def assert_journal_once(history: list[keel.HistoryEvent], steps: list[str], run_id: str) -> None:
    """One step_completed per step, a contiguous journal ending in one run_completed."""
    assert step_completions(history) == Counter(dict.fromkeys(steps, 1)), run_id
    seqs = [e.seq for e in history]
    assert seqs == list(range(len(seqs))), f"{run_id}: journal has gaps: {seqs}"
    types = [e.type for e in history]
    assert types.count("run_completed") == 1 and types[-1] == "run_completed", (run_id, types)


def intervals(executions: list[Execution]) -> dict[str, list[tuple[float, float, str, int]]]:
    """Per run: (start, end, step, pid) of every step body that logged both."""
    starts: dict[tuple[str, str, int, int], float] = {}
    out: dict[str, list[tuple[float, float, str, int]]] = defaultdict(list)
    for e in executions:
        key = (e.run_id, e.step, e.attempt, e.pid)
        assert e.at is not None, e
        if e.phase == "start":
            assert key not in starts, f"{key} started twice"
            starts[key] = e.at
        elif e.phase == "end":
            out[e.run_id].append((starts.pop(key), e.at, e.step, e.pid))
    assert not starts, f"step bodies that never ended: {sorted(starts)}"
    return out


@pytest.mark.timeout(90)
async def test_three_workers_share_one_database(harness: Harness) -> None:
    """150 runs, three workers: each run completes once with the right result,
    each step body runs exactly once, no step is journaled twice, no two
    executions of one run overlap in time, and every worker does some work."""
    n = 150
    run_ids = [f"trio-{i:03d}" for i in range(n)]
    # No crash here, so no lease may expire: a long TTL. A small concurrency, so
    # no worker can take every run at once.
    workers = tuple(
        harness.worker(PG_FLOWS, lease_ttl=10.0, concurrency=12, poll_interval=0.05)
        for _ in range(3)
    )
    await harness.wait_for(lambda: all(map(ready, workers)), "three workers", alive=workers)
    async with harness.client() as client:
        await asyncio.gather(
            *(client.start(pg_flows.chain, i, 3, "", 15, run_id=r) for i, r in enumerate(run_ids))
        )
        infos = await harness.wait_finished(client, run_ids, timeout=60, alive=workers)
        results = {r: await client.result(r) for r in run_ids}
        histories = {r: await client.history(r) for r in run_ids}

    bad = {r: (i.state, i.error) for r, i in infos.items() if i.state != "completed"}
    assert not bad, bad
    assert results == {r: pg_flows.chain_expected(i) for i, r in enumerate(run_ids)}
    assert harness.started() == Counter({(r, s): 1 for r in run_ids for s in THREE})
    for run_id, history in histories.items():
        assert_journal_once(history, THREE, run_id)

    # Never two executions of one run at once: per run, the step bodies' time
    # intervals (from any worker) are disjoint, and c1 < c2 < c3.
    spans = intervals(harness.executions())
    assert set(spans) == set(run_ids)
    for run_id, run_spans in spans.items():
        run_spans.sort()
        assert [s[2] for s in run_spans] == THREE, (run_id, run_spans)
        for (_s0, end0, step0, pid0), (start1, _e1, step1, pid1) in pairwise(run_spans):
            assert end0 <= start1, (
                f"{run_id}: {step1} (pid {pid1}) started at {start1:.6f} while "
                f"{step0} (pid {pid0}) ran until {end0:.6f}"
            )
    by_pid = Counter(e.pid for e in harness.executions() if e.phase == "start")
    assert set(by_pid) == {w.pid for w in workers}, f"executions per worker pid: {dict(by_pid)}"
    for proc in workers:
        assert proc.alive(), proc.output()
        # No write was ever refused for a lost lease. (A heartbeat may still log
        # "lease lost" for a run that finished while the renewal was in flight.)
        assert "LeaseLost" not in proc.err.read_text(), proc.output()
        assert "a journal write was refused" not in proc.err.read_text(), proc.output()


@pytest.mark.timeout(90)
async def test_sigkill_under_load_another_worker_recovers(harness: Harness) -> None:
    """60 runs on two workers (lease TTL 2 s); kill -9 one while it holds runs
    blocked mid-step. The other finishes every run, takes the dead worker's runs
    only after the kill (when its liveness lock is gone, without waiting for
    the leases: see test_failover.py), within TTL + 5 s of the kill, and never
    re-runs a step that was journaled before the kill."""
    n, ttl = 60, 2.0
    run_ids = [f"kill-{i:02d}" for i in range(n)]
    gated = {r for i, r in enumerate(run_ids) if i % 2}  # their c2 blocks until after the kill
    victim = harness.worker(PG_FLOWS, lease_ttl=ttl, concurrency=10)
    survivor = harness.worker(PG_FLOWS, lease_ttl=ttl, concurrency=10)
    both = (victim, survivor)
    await harness.wait_for(lambda: ready(victim) and ready(survivor), "two workers", alive=both)
    async with harness.client() as client:
        for i, run_id in enumerate(run_ids):
            gate = "load" if run_id in gated else ""
            await client.start(pg_flows.chain, i, 3, gate, 40, run_id=run_id)

        def victim_busy() -> bool:
            blocked = {
                e.run_id
                for e in harness.executions()
                if e.pid == victim.pid and e.step == "accpg.c2" and e.phase == "start"
            }
            return len(blocked & gated) >= 3

        await harness.wait_for(victim_busy, "the victim to block in 3 runs", alive=both)
        before_kill = time.time()
        victim.kill()
        t_kill = time.time()
        assert victim.popen.returncode == -9
        # One statement, well before the victim's leases can expire (>= TTL*2/3
        # after its last heartbeat): what was journaled and held at the kill.
        rows = await harness.sql(
            "SELECT r.run_id, r.lease_owner, r.lease_expires_at,"
            " array(SELECT e.command FROM keel.events e"
            "       WHERE e.run_id = r.run_id AND e.type = 'step_completed')"
            " FROM keel.runs r"
        )
        snapshot_age = time.time() - t_kill
        started_before = harness.started()
        harness.open_gate("load")
        assert snapshot_age < ttl / 2, f"the snapshot took {snapshot_age:.2f}s"

        held = {r: expires for r, owner, expires, _c in rows if pid_of(owner) == victim.pid}
        journaled = {(r, command_name(c)) for r, *_x, cmds in rows for c in cmds}
        assert held, "the victim held no run at the kill"
        assert {r for r, _s in journaled} & set(held), "the victim had journaled nothing"
        # Compared with the time just before the kill: the survivor's liveness
        # sweep may expire the victim's leases (to "now") while kill() waits.
        assert min(held.values()) >= before_kill, "a lease of the victim expired before the kill"

        infos = await harness.wait_finished(client, run_ids, timeout=ttl + 10, alive=(survivor,))
        recovered_in = time.time() - t_kill
        results = {r: await client.result(r) for r in run_ids}
        histories = {r: await client.history(r) for r in run_ids}

    bad = {r: (i.state, i.error) for r, i in infos.items() if i.state != "completed"}
    assert not bad, bad
    assert recovered_in <= ttl + 5.0, f"recovery took {recovered_in:.1f}s after the kill"
    assert results == {r: pg_flows.chain_expected(i) for i, r in enumerate(run_ids)}
    runs = harness.started()
    for run_id, step in journaled:
        assert runs[(run_id, step)] == 1, f"{run_id}/{step} was journaled before the kill"
    for run_id in run_ids:
        for step in THREE:
            assert 1 <= runs[(run_id, step)] <= 2, (run_id, step, runs[(run_id, step)])
        assert_journal_once(histories[run_id], THREE, run_id)
    # The survivor took over each held run only once the victim was dead.
    execs = harness.executions()
    for run_id in held:
        later = [e.at for e in execs if e.run_id == run_id and e.pid == survivor.pid]
        assert later, f"{run_id} was held by the victim but the survivor never ran a step of it"
        assert min(t for t in later if t is not None) >= before_kill, (
            f"{run_id}: the survivor ran a step before the victim was killed"
        )
        assert all(
            e.pid == victim.pid
            for e in execs
            if e.run_id == run_id and e.at is not None and e.at < before_kill
        )
    # Steps in flight at the kill ran again, on the survivor.
    in_flight = {
        (e.run_id, e.step) for e in execs if e.pid == victim.pid and e.phase == "start"
    } - journaled
    assert in_flight
    for run_id, step in in_flight:
        assert started_before[(run_id, step)] == 1
        assert runs[(run_id, step)] == 2, (run_id, step)


@pytest.mark.timeout(60)
async def test_sigterm_drain_hands_the_run_over_at_once(harness: Harness) -> None:
    """Two workers with a 30 s lease TTL; SIGTERM the one running a 1 s step:
    it finishes the step, exits 0, and the other worker completes the run within
    seconds (no TTL wait), without running the journaled step again."""
    ttl = 30.0
    run_id = "drain-1"
    w1 = harness.worker(FLOWS, lease_ttl=ttl, drain_timeout=10.0)
    w2 = harness.worker(FLOWS, lease_ttl=ttl, drain_timeout=10.0)
    both = (w1, w2)
    await harness.wait_for(lambda: ready(w1) and ready(w2), "two workers", alive=both)
    async with harness.client() as client:
        await client.start(flows.drain, 1.0, run_id=run_id)
        await harness.wait_for(
            lambda: harness.started()[(run_id, "acc.slow")], "the slow step to start", alive=both
        )
        [slow] = [e for e in harness.executions() if e.step == "acc.slow"]
        holder, other = (w1, w2) if slow.pid == w1.pid else (w2, w1)
        assert slow.pid == holder.pid
        t_term = time.monotonic()
        holder.terminate()
        code = holder.wait(timeout=15)
        drained_in = time.monotonic() - t_term
        assert code == 0, holder.output()
        infos = await harness.wait_finished(client, [run_id], timeout=10.0, alive=(other,))
        took = time.monotonic() - t_term
        result = await client.result(run_id)
        history = await client.history(run_id)

    assert infos[run_id].state == "completed", infos[run_id].error
    assert result == "slow done, quick done"
    assert drained_in < 5.0, f"the drain took {drained_in:.1f}s"
    assert took < 5.0, f"the run finished {took:.1f}s after SIGTERM (waited for the TTL?)"
    runs = harness.started()
    assert runs[(run_id, "acc.slow")] == 1
    assert runs[(run_id, "acc.quick")] == 1
    ends = [(e.step, e.pid) for e in harness.executions() if e.phase == "end"]
    assert ends == [("acc.slow", holder.pid)], "the slow step did not finish on the drained worker"
    [quick] = [e for e in harness.executions() if e.step == "acc.quick"]
    assert quick.pid == other.pid
    assert step_completions(history) == Counter({"acc.slow": 1, "acc.quick": 1})
    assert "leases released" in holder.err.read_text(), holder.output()
