"""SIGKILL of a real ``keel worker`` in the middle of writing a journal snapshot.

The first worker runs a long sequential workflow with ``snapshot_every=20``
and kills itself inside its K-th snapshot write, after the UPSERT ran in the
transaction and before the commit (the hook is test-only, in
``apps/snapkill.py``). K=1 kills the run's first snapshot write; K=2 kills the
write replacing an existing snapshot. A second, normal worker takes the run
over once the lease expires and finishes it. Executions are counted from the
step bodies' own log, never from the journal.
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

import keel
from keel.core import snapshot as sn
from tests.acceptance.apps import snapkill
from tests.acceptance.harness import Harness
from tests.pg import pg_url, postgres_server  # noqa: F401  (fixtures)

pytestmark = pytest.mark.acceptance

APP = "tests.acceptance.apps.snapkill"
N = 80  # steps: the kill lands around step 10 or 20, the second worker does the rest


@pytest.fixture(params=["sqlite", "postgres"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    """Workers on one SQLite file, or on a fresh PostgreSQL database."""
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    h = Harness(tmp_path, db_url=url)
    try:
        yield h
    finally:
        h.cleanup()


def assert_journal_sound(history: list[keel.HistoryEvent]) -> None:
    """Seqs contiguous from 0, and no command has any event type journaled twice."""
    seqs = [e.seq for e in history]
    assert seqs == list(range(len(seqs))), f"journal has gaps: {seqs}"
    twice = {
        key: count
        for key, count in Counter((e.command, e.type) for e in history if e.command).items()
        if count > 1
    }
    assert not twice, f"journaled more than once: {twice}"


def completed_steps(history: list[keel.HistoryEvent]) -> set[str]:
    return {e.command or "" for e in history if e.type == "step_completed"}


def iterations_started(harness: Harness, run_id: str) -> Counter[int]:
    """How many times the body of each iteration ``i`` of ``run_id`` started."""
    return Counter(
        int(e.phase.removeprefix("start-"))
        for e in harness.executions()
        if e.run_id == run_id and e.phase.startswith("start-")
    )


@pytest.mark.parametrize("kill_at", [1, 2], ids=["first-snapshot", "replacing-one"])
async def test_sigkill_inside_a_snapshot_write(harness: Harness, kill_at: int) -> None:
    backend = "postgres" if harness.db_url.startswith("postgres") else "sqlite"
    run_id = f"snap-{kill_at}"
    mark = harness.root / snapkill.MARK_NAME
    async with harness.client() as client:
        store = client.store
        w1 = harness.worker(APP, env={snapkill.KILL_ENV: str(kill_at)})
        await client.start(snapkill.snap_long, N, run_id=run_id)
        await harness.wait_for(
            lambda: not w1.alive(), "worker1 to SIGKILL itself inside a snapshot write", 30
        )
        assert w1.wait(10) == -signal.SIGKILL, harness.worker_output()
        assert mark.exists(), f"worker1 died elsewhere\n{harness.worker_output()}"
        fields = mark.read_text().split()
        assert fields[0] == backend and fields[1] == run_id and int(fields[4]) == w1.pid
        killed_upto = int(fields[2])
        assert int(fields[3]) == killed_upto  # the UPSERT had taken effect in its transaction

        # Nothing of the dying transaction committed: the run's snapshot is the
        # one before it (or none), while the events it covered were durable.
        before = await store.runs.load_snapshot(run_id)
        if kill_at == 1:
            assert before is None
        else:
            assert before is not None
            assert before.upto_seq <= killed_upto - snapkill.EVERY
        held = await store.reads.get_run(run_id)
        assert held is not None and held.state == "running"  # leased by the dead worker
        assert held.next_seq > killed_upto
        history_before = await client.history(run_id)
        assert_journal_sound(history_before)
        assert len(history_before) == held.next_seq
        done_before = completed_steps(history_before)
        assert 0 < len(done_before) < N

        w2 = harness.worker(APP)  # a normal worker: takes over once the lease expires
        control = await client.start(snapkill.snap_long, N, run_id=f"control-{kill_at}")
        infos = await harness.wait_finished(
            client, [run_id, control.run_id], timeout=45, alive=(w2,)
        )
        assert infos[run_id].state == "completed", infos[run_id].error
        assert infos[control.run_id].state == "completed", infos[control.run_id].error
        result = await client.result(run_id)
        assert result == await client.result(control.run_id) == snapkill.expected(N)
        history = await client.history(run_id)
        final = await store.reads.get_run(run_id)
        after = await store.runs.load_snapshot(run_id)

    # The journal: contiguous, each step completed exactly once, nothing rewritten.
    assert_journal_sound(history)
    assert len(completed_steps(history)) == N
    assert [(e.seq, e.type, e.command) for e in history[: len(history_before)]] == [
        (e.seq, e.type, e.command) for e in history_before
    ]

    # The step bodies: each ran once, except at most the one in flight at the kill.
    started = iterations_started(harness, run_id)
    assert set(started) == set(range(N))
    again = sorted(i for i, count in started.items() if count > 1)
    assert len(again) <= 1 and all(started[i] == 2 for i in again), started
    by_iteration = {i: f"step:acc.snap_step#{i}" for i in again}
    assert not {by_iteration[i] for i in again} & done_before, "a journaled step ran again"

    # A valid snapshot, written by the second worker, past what the dead one tried.
    assert final is not None and after is not None
    assert after.format == sn.FORMAT and after.version == snapkill.snap_long.version
    assert killed_upto < after.upto_seq < final.next_seq
    if before is not None:
        assert after.created_at > before.created_at
    snap = sn.decode(after.data, version=after.version, upto_seq=after.upto_seq)
    assert snap.entries and snap.entries[-1].seq <= after.upto_seq
    for entry in snap.entries:  # a compacted copy of the journal's own events
        event = history[entry.seq]
        assert (event.type, event.command) == (entry.type.value, entry.command)
