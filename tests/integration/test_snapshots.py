"""Journal snapshots end to end, on every backend, every turn replayed from the store.

A run past its workflow's ``snapshot_every`` gets a snapshot; a fresh worker
resumes from it plus the tail; a snapshot that is corrupt, of another version
or format, or wrong, is ignored (full replay); events are never deleted; and a
worker that dies while writing one leaves a run another worker finishes with
the same outcome, each completed step having run once.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

import keel
from keel.core import snapshot as sn
from keel.core.events import EventType
from keel.core.journal import JournalEntry
from keel.store.base import NewSnapshot, SnapshotRecord
from keel.store.ports import Store, Suspend, Turn
from tests.integration._support import crash, wait_until

calls: Counter[str] = Counter()
_lock = threading.Lock()

EVERY = 10


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()


@keel.step(name="snaps.inc")
def inc(i: int, x: int) -> int:
    with _lock:
        calls[f"inc-{i}"] += 1
    return x + 1


@keel.workflow(name="snaps.long", snapshot_every=EVERY)
async def long(n: int) -> dict[str, Any]:
    value = 0
    for i in range(n):
        value = await inc(i, value)
    await keel.sleep(0.01)
    got = await keel.wait_for_signal("more")
    for i in range(n, n + int(got)):
        value = await inc(i, value)
    return {"value": value, "got": got}


@keel.workflow(name="snaps.off", snapshot_every=None)
async def off(n: int) -> int:
    value = 0
    for i in range(n):
        value = await inc(i, value)
    return value


class Spy:
    """A store that notes journal loads and can make save_snapshot fail or hang."""

    def __init__(self, inner: Store, on_save: Callable[[], Any] | None = None) -> None:
        self._inner = inner
        self.on_save = on_save
        self.loads: list[int] = []  # after_seq of every history read
        self.saves = 0
        self.reads = _SpyReads(self)
        self.runs = _SpyRuns(self)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _SpyReads:
    def __init__(self, spy: Spy) -> None:
        self._spy = spy

    def __getattr__(self, name: str) -> Any:
        return getattr(self._spy._inner.reads, name)

    async def history(self, run_id: str, *, after_seq: int = -1) -> Any:
        self._spy.loads.append(after_seq)
        return await self._spy._inner.reads.history(run_id, after_seq=after_seq)


class _SpyRuns:
    def __init__(self, spy: Spy) -> None:
        self._spy = spy

    def __getattr__(self, name: str) -> Any:
        return getattr(self._spy._inner.runs, name)

    async def save_snapshot(self, lease: Any, snapshot: NewSnapshot) -> None:
        self._spy.saves += 1
        if self._spy.on_save is not None:
            result = self._spy.on_save()
            if asyncio.iscoroutine(result):
                await result
        await self._spy._inner.runs.save_snapshot(lease, snapshot)


def _worker(store: Any, **options: Any) -> keel.Worker:
    options.setdefault("cache", False)
    options.setdefault("poll_interval", 0.05)
    options.setdefault("lease_ttl", 5.0)
    return keel.Worker(store, **options)


async def _snapshot(store: Store, run_id: str) -> SnapshotRecord | None:
    return await store.runs.load_snapshot(run_id)


async def _waiting(client: keel.Client, run_id: str) -> None:
    async def probe() -> bool:
        events = await client.history(run_id)
        return (
            any(e.type == "signal_awaited" for e in events)
            and (await client.get(run_id)).state is keel.RunState.SUSPENDED
        )

    await wait_until(probe, f"run {run_id} to wait for its signal", timeout=30)


def _steps_ran_once(n: int) -> None:
    assert calls == Counter({f"inc-{i}": 1 for i in range(n)})


async def test_snapshot_is_stored_and_a_fresh_worker_resumes_from_it(
    make_store: Callable[[], Any],
) -> None:
    n = 35
    async with _worker(make_store()) as worker:
        client = worker.client()
        await client.start(long, n, run_id="long-1")
        await _waiting(client, "long-1")
        snap = await _snapshot(worker.store, "long-1")
        assert snap is not None and snap.version == long.version and snap.format == sn.FORMAT
        assert snap.upto_seq >= n - EVERY
        events_before = len(await client.history("long-1"))
        sn.decode(snap.data, version=long.version, upto_seq=snap.upto_seq)  # valid
    spy = Spy(make_store())
    async with _worker(spy) as worker:
        client = worker.client()
        await client.signal("long-1", "more", 3)
        result = await client.result("long-1", timeout=30)
        assert result == {"value": n + 3, "got": 3}
        # Every build replayed the snapshot plus its tail, never the whole journal.
        assert spy.loads and all(after >= snap.upto_seq for after in spy.loads)
        history = await client.history("long-1")
    _steps_ran_once(n + 3)
    # Nothing was deleted: every event is there, seqs contiguous.
    assert [e.seq for e in history] == list(range(len(history)))
    assert len(history) > events_before
    types = [e.type for e in history]
    assert types.count("step_completed") == n + 3 and "timer_started" in types


async def _reclaim(store: Store, run_id: str) -> Any:
    """Lease the (due) run ourselves, as a worker would."""

    async def probe() -> Any:
        return await store.runs.claim("tester", limit=10, ttl=30)

    [claimed] = await wait_until(probe, f"claim of {run_id}", timeout=30)
    assert claimed.run.run_id == run_id
    return claimed


def _bad_snapshots(good: SnapshotRecord, version: str) -> dict[str, NewSnapshot]:
    decoded = sn.decode(good.data, version=version, upto_seq=good.upto_seq)
    flipped = bytearray(good.data)
    flipped[len(flipped) // 2] ^= 0x40
    other = sn.Snapshot("someone-else", good.upto_seq, decoded.entries, decoded.hashes)
    # Valid bytes, right version, a step's result changed: the next step's
    # arguments no longer match their recorded hash.
    wrong = [
        JournalEntry(e.seq, e.type, e.command, e.data.replace(b'"result":1,', b'"result":99,'))
        if e.type is EventType.STEP_COMPLETED
        else e
        for e in decoded.entries
    ]
    assert wrong != decoded.entries
    lying = sn.Snapshot(version, good.upto_seq, wrong, decoded.hashes)
    # Valid bytes, right version, a command missing: replay is nondeterministic.
    missing = [e for e in decoded.entries if e.command != "step:snaps.inc#3"]
    gap = sn.Snapshot(version, good.upto_seq, missing, decoded.hashes)
    return {
        "corrupt": NewSnapshot(good.upto_seq, version, sn.FORMAT, bytes(flipped)),
        "torn": NewSnapshot(good.upto_seq, version, sn.FORMAT, good.data[: len(good.data) // 2]),
        "version": NewSnapshot(good.upto_seq, "someone-else", sn.FORMAT, sn.encode(other)),
        "format": NewSnapshot(good.upto_seq, version, sn.FORMAT + 1, good.data),
        "nondeterministic": NewSnapshot(good.upto_seq, version, sn.FORMAT, sn.encode(gap)),
        "lying": NewSnapshot(good.upto_seq, version, sn.FORMAT, sn.encode(lying)),
    }


@pytest.mark.parametrize(
    "kind", ["corrupt", "torn", "version", "format", "nondeterministic", "lying"]
)
async def test_unusable_snapshot_is_ignored_for_a_full_replay(
    make_store: Callable[[], Any], kind: str
) -> None:
    n = 25
    async with _worker(make_store()) as worker:
        client = worker.client()
        await client.start(long, n, run_id="long-2")
        await _waiting(client, "long-2")
        good = await _snapshot(worker.store, "long-2")
        assert good is not None
    store = make_store()
    await store.open()
    try:
        await keel.Client(store).signal("long-2", "more", 2)
        claimed = await _reclaim(store, "long-2")
        await store.runs.save_snapshot(claimed.lease, _bad_snapshots(good, long.version)[kind])
        await store.runs.commit(
            claimed.lease, Turn(claimed.run.next_seq, [], end=Suspend(await store.now()))
        )
    finally:
        await store.close()
    spy = Spy(make_store())
    async with _worker(spy) as worker:
        client = worker.client()
        result = await client.result("long-2", timeout=30)
    assert result == {"value": n + 2, "got": 2}
    if kind in ("nondeterministic", "lying"):
        # Replayed from the snapshot, found nondeterministic, replayed in full.
        assert spy.loads[:2] == [good.upto_seq, -1]
    else:
        assert spy.loads[0] == -1  # the first build replayed the whole journal
    _steps_ran_once(n + 2)


async def test_crash_while_writing_a_snapshot_then_another_worker_resumes(
    make_store: Callable[[], Any],
) -> None:
    n = 3 * EVERY + 5
    writing = asyncio.Event()
    hang = asyncio.Event()

    async def second_hangs() -> None:
        if spy.saves < 2:
            return  # the first snapshot is written
        writing.set()
        await hang.wait()  # the process dies here, before anything is committed

    spy = Spy(make_store(), on_save=second_hangs)
    first = _worker(spy, lease_ttl=1.0)
    async with first:
        client = first.client()
        await client.start(long, n, run_id="long-3")
        await asyncio.wait_for(writing.wait(), 30)
        stored = await _snapshot(spy, "long-3")
        assert stored is not None and stored.upto_seq < 2 * EVERY + 1
        crash(first)
        hang.set()
    second = _worker(make_store(), lease_ttl=5.0)
    async with second:
        client = second.client()
        await _waiting(client, "long-3")
        await client.signal("long-3", "more", 4)
        assert await client.result("long-3", timeout=30) == {"value": n + 4, "got": 4}
        history = await client.history("long-3")
        snap = await _snapshot(second.store, "long-3")
    _steps_ran_once(n + 4)
    assert [e.seq for e in history] == list(range(len(history)))
    assert snap is not None and snap.upto_seq > stored.upto_seq


async def test_failing_snapshot_writes_never_break_the_run(
    make_store: Callable[[], Any],
) -> None:
    def boom() -> None:
        raise keel.StoreError("disk full (injected)")

    spy = Spy(make_store(), on_save=boom)
    async with _worker(spy) as worker:
        client = worker.client()
        await client.start(long, 2 * EVERY + 3, run_id="long-4")
        await _waiting(client, "long-4")
        await client.signal("long-4", "more", 1)
        assert await client.result("long-4", timeout=30) == {"value": 2 * EVERY + 4, "got": 1}
        assert await _snapshot(worker.store, "long-4") is None
    assert spy.saves >= 2  # it tried again later, and the run went on each time
    _steps_ran_once(2 * EVERY + 4)


async def test_snapshots_off_and_cached_workers(make_store: Callable[[], Any]) -> None:
    async with _worker(make_store(), cache=True) as worker:
        client = worker.client()
        assert await client.result((await client.start(off, 30)).run_id, timeout=30) == 30
        run = await client.start(long, 30, run_id="long-5")
        await _waiting(client, "long-5")
        snap = await _snapshot(worker.store, "long-5")
        assert snap is not None  # written by a worker keeping the run resident too
        await client.signal("long-5", "more", 0)
        assert await run.result(timeout=30) == {"value": 30, "got": 0}
        runs = await client.list(workflow="snaps.off")
        assert await _snapshot(worker.store, runs.runs[0].run_id) is None


@pytest.mark.parametrize("bad", [-1, 1.5, "10", True])
def test_bad_snapshot_every_is_a_configuration_error(bad: Any) -> None:
    with pytest.raises(keel.ConfigurationError, match="snapshot_every"):

        @keel.workflow(name="snaps.bad", snapshot_every=bad, registry=keel.Registry())
        async def bad_wf() -> None:
            return None


def test_snapshot_every_default_and_off() -> None:
    reg = keel.Registry()

    @keel.workflow(name="snaps.d", registry=reg)
    async def d() -> None:
        return None

    @keel.workflow(name="snaps.z", registry=reg, snapshot_every=0)
    async def z() -> None:
        return None

    assert (d.snapshot_every, z.snapshot_every, long.snapshot_every) == (1000, None, EVERY)
