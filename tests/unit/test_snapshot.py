"""Journal snapshots (core/snapshot.py): compaction keeps what replay needs.

The journals are recorded by a real worker on the memory store (parallel steps,
retries, dispatched steps, timers, signals with and without timeout, children,
patches, side effects, cancellation cleanup). For every cut point and every
journal prefix, replaying the compacted prefix plus the tail must give the
same outcome and the same pending commands as replaying the full journal.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any

import msgspec
import pytest

import keel
from keel.core import codec
from keel.core import snapshot as sn
from keel.core.events import (
    EventType,
    StepAttemptFailed,
    StepCompleted,
    StepFailed,
    TimerFired,
    TimerStarted,
    encode_data,
)
from keel.core.journal import JournalEntry
from keel.core.replay import Execution
from keel.errors import NondeterminismError
from keel.store.memory import MemoryStore
from tests.unit.test_replay import FixedLive

_attempts: Counter[str] = Counter()
_lock = threading.Lock()


def _tries(name: str) -> int:
    with _lock:
        _attempts[name] += 1
        return _attempts[name]


@keel.step(name="snap.add")
def add(x: int, y: int) -> int:
    return x + y


@keel.step(name="snap.flaky", retry=keel.RetryPolicy(max_attempts=4, initial_interval=0.01))
def flaky(x: int) -> int:
    if _tries("flaky") < 3:
        raise RuntimeError("not yet")
    return x * 10


@keel.step(name="snap.doomed", retry=keel.RetryPolicy(max_attempts=2, initial_interval=0.01))
def doomed() -> None:
    raise ValueError("never works")


@keel.step(name="snap.queued", queue="snapq")
def queued(x: int) -> int:
    return x + 1000


@keel.step(name="snap.cleanup")
def cleanup(what: str) -> str:
    return f"cleaned {what}"


@keel.workflow(name="snap.kid")
async def kid(x: int) -> int:
    await keel.sleep(0.01)
    return await add(x, 1)


@keel.workflow(name="snap.rich")
async def rich(n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    out["gathered"] = list(await asyncio.gather(*(add(i, n) for i in range(3))))
    out["flaky"] = await flaky(n)
    try:
        await doomed()
    except keel.StepFailedError as exc:
        out["doomed"] = str(exc)
    out["queued"] = await queued(n)
    await keel.sleep(0.01)
    out["patched"] = keel.patched("snap-p1")
    out["now"] = keel.now().isoformat()
    out["uuid"] = str(keel.uuid4())
    out["effect"] = await keel.side_effect(lambda: 7, name="seven")
    out["go"] = await keel.wait_for_signal("go", timeout=30)
    try:
        await keel.wait_for_signal("never", timeout=0.01)
    except keel.SignalTimeoutError:
        out["timed_out"] = True
    handle = await keel.start_child(kid, n)
    out["child"] = await keel.run_child(kid, n + 1)
    out["started"] = await handle.result()
    out["last"] = await add(out["child"], out["started"])
    return out


@keel.workflow(name="snap.cancellable")
async def cancellable(n: int) -> None:
    await add(n, 1)
    try:
        await asyncio.gather(keel.sleep(3600), keel.wait_for_signal("never"))
    except keel.WorkflowCancelled:
        await cleanup("a")
        await keel.sleep(0.01)
        await cleanup("b")
        raise


async def _record() -> dict[str, tuple[Any, list[JournalEntry]]]:
    _attempts.clear()
    store = MemoryStore()
    async with keel.Worker(
        store, cache=False, poll_interval=0.02, queues=["snapq"], inline_wait=0.5
    ) as worker:
        client = worker.client()
        r = await client.start(rich, 5, run_id="rich")
        for _ in range(500):
            if any(e.type == "signal_awaited" for e in await client.history("rich")):
                break
            await asyncio.sleep(0.01)
        await client.signal("rich", "go", {"ok": True})
        await r.result(timeout=20)
        c = await client.start(cancellable, 1, run_id="cancellable")
        for _ in range(500):
            if any(e.type == "timer_started" for e in await client.history("cancellable")):
                break
            await asyncio.sleep(0.01)
        await client.cancel("cancellable")
        with pytest.raises(keel.RunCancelledError):
            await c.result(timeout=20)
    out = {}
    await store.open()
    for run_id, fn, args in (("rich", rich, (5,)), ("cancellable", cancellable, (1,))):
        records = await store.reads.history(run_id)
        out[run_id] = (
            (fn, args),
            [JournalEntry(r.seq, EventType(r.type), r.command, r.data) for r in records],
        )
    return out


@pytest.fixture(scope="module")
def journals() -> dict[str, tuple[Any, list[JournalEntry]]]:
    return asyncio.run(_record())


def _replay(
    fn: Any, args: tuple[Any, ...], entries: list[JournalEntry], hashes: Any = None
) -> Execution:
    ex = Execution("r", fn, args, {}, entries, FixedLive(), recorded_hashes=hashes)
    ex.start()
    return ex


def _state(ex: Execution) -> Any:
    outcome = ex.outcome
    ended = None
    if outcome is not None:
        ended = (outcome.status, outcome.result, repr(outcome.error))
    pending = [
        (
            c.key,
            c.unchecked,
            c.attempts,
            c.retry_at,
            c.dispatched,
            c.task_id,
            c.fire_at,
            c.awaited,
            c.deadline,
            c.child_run_id,
        )
        for c in ex.pending()
    ]
    order = [(c.key, c.child_run_id) for c in ex.children()]
    return ended, pending, order, ex.cancel_requested, ex.next_seq


def _without_run_end(entries: list[JournalEntry]) -> list[JournalEntry]:
    return [e for e in entries if e.type not in (EventType.RUN_COMPLETED, EventType.RUN_CANCELLED)]


@pytest.mark.parametrize("name", ["rich", "cancellable"])
def test_compacted_replay_equals_full_replay_at_every_cut(
    journals: dict[str, tuple[Any, list[JournalEntry]]], name: str
) -> None:
    (fn, args), full = journals[name]
    full = _without_run_end(full)
    types = {e.type for e in full}
    if name == "rich":  # the journal really has what the test claims to cover
        assert {
            EventType.STEP_ATTEMPT_FAILED,
            EventType.STEP_FAILED,
            EventType.STEP_DISPATCHED,
            EventType.TIMER_STARTED,
            EventType.SIGNAL_AWAITED,
            EventType.SIGNAL_TIMED_OUT,
            EventType.CHILD_STARTED,
            EventType.PATCHED,
        } <= types
    else:
        assert EventType.CANCEL_REQUESTED in types
    compared = 0
    for m in range(1, len(full) + 1):
        journal = full[:m]
        expected = _state(_replay(fn, args, journal))
        for upto in range(0, m):
            snap = sn.compact(journal, upto, "v")
            blob = sn.encode(snap)
            back = sn.decode(blob, version="v", upto_seq=upto)
            assert back == snap
            tail = [e for e in journal if e.seq > upto]
            got = _state(_replay(fn, args, [*back.entries, *tail], back.hashes))
            assert got == expected, f"{name}: journal[:{m}] cut at seq {upto}"
            compared += 1
    assert compared > 40
    if name == "rich":  # it did drop something
        assert len(sn.compact(full, full[-1].seq, "v").entries) < len(full) - 5


def test_compaction_drops_only_progress_of_resolved_commands(
    journals: dict[str, tuple[Any, list[JournalEntry]]],
) -> None:
    _, full = journals["rich"]
    snap = sn.compact(full, full[-1].seq, "v")
    kept = {e.seq for e in snap.entries}
    resolved = {e.command for e in full if e.type in sn.RESOLVING}
    for e in full:
        if e.seq not in kept:
            assert e.type in sn.DROPPABLE and e.command in resolved, e
    assert all(e.type is not EventType.CHILD_STARTED or e.seq in kept for e in full)
    # Compacting a compacted journal again changes nothing.
    again = sn.compact(snap.entries, snap.upto_seq, "v", snap.hashes)
    assert again == snap


def test_second_snapshot_over_a_compacted_journal_replays_the_same(
    journals: dict[str, tuple[Any, list[JournalEntry]]],
) -> None:
    (fn, args), full = journals["rich"]
    full = _without_run_end(full)
    expected = _state(_replay(fn, args, full))
    for first in range(0, len(full), 3):
        one = sn.compact(full, first, "v")
        journal = [*one.entries, *(e for e in full if e.seq > first)]
        for second in range(first, len(full)):
            two = sn.compact(journal, second, "v", one.hashes)
            tail = [e for e in full if e.seq > second]
            assert _state(_replay(fn, args, [*two.entries, *tail], two.hashes)) == expected


def _h(x: int) -> str:
    return codec.args_hash(codec.encode_args(add.fn, (x, 0), {}, what="t"))


def test_hash_of_a_dropped_first_event_is_carried_and_checked() -> None:
    # A step whose first (dropped) event recorded another arguments hash than
    # its completion: replay from the snapshot must still see the recorded one.
    started = JournalEntry(0, EventType.RUN_STARTED, None, b"{}")
    failed = JournalEntry(
        1,
        EventType.STEP_ATTEMPT_FAILED,
        "step:snap.add#0",
        encode_data(StepAttemptFailed(attempt=1, retry_at=0.0, args_hash=_h(1))),
    )
    done = JournalEntry(
        2,
        EventType.STEP_COMPLETED,
        "step:snap.add#0",
        encode_data(StepCompleted(result=msgspec.Raw(b"1"))),
    )
    snap = sn.compact([started, failed, done], 2, "v")
    assert [e.seq for e in snap.entries] == [0, 2]
    assert snap.hashes == {"step:snap.add#0": _h(1)}

    @keel.workflow(name="snap.one_add", registry=keel.Registry())
    async def one_add(x: int) -> int:
        return await add(x, 0)

    assert _replay(one_add.fn, (1,), snap.entries, snap.hashes).outcome is not None
    with pytest.raises(NondeterminismError):
        _replay(one_add.fn, (2,), snap.entries, snap.hashes)
    with pytest.raises(NondeterminismError):  # the full journal says the same
        _replay(one_add.fn, (2,), [started, failed, done])


def test_step_failed_without_attempt_count_keeps_its_attempts() -> None:
    entries = [
        JournalEntry(0, EventType.RUN_STARTED, None, b"{}"),
        JournalEntry(
            1, EventType.STEP_ATTEMPT_FAILED, "step:x#0", encode_data(StepAttemptFailed(attempt=1))
        ),
        JournalEntry(2, EventType.STEP_FAILED, "step:x#0", encode_data(StepFailed(error={}))),
    ]
    assert len(sn.compact(entries, 2, "v").entries) == 3


def test_corrupt_torn_or_foreign_snapshots_are_rejected() -> None:
    entries = [
        JournalEntry(0, EventType.RUN_STARTED, None, b"{}"),
        JournalEntry(
            1, EventType.TIMER_STARTED, "sleep:sleep#0", encode_data(TimerStarted(fire_at=1.0))
        ),
        JournalEntry(2, EventType.TIMER_FIRED, "sleep:sleep#0", encode_data(TimerFired())),
    ]
    snap = sn.compact(entries, 2, "v1")
    assert [e.seq for e in snap.entries] == [0, 2]
    blob = sn.encode(snap)
    assert sn.decode(blob, version="v1") == snap
    flipped = bytearray(blob)
    flipped[-3] ^= 0x01
    for bad, why in [
        (bytes(flipped), "checksum"),
        (blob[: len(blob) // 2], "checksum"),  # torn
        (b"", "too short"),
    ]:
        with pytest.raises(sn.SnapshotInvalid, match=why):
            sn.decode(bad, version="v1")
    with pytest.raises(sn.SnapshotInvalid, match="version"):
        sn.decode(blob, version="v2")
    with pytest.raises(sn.SnapshotInvalid, match="covers seq"):
        sn.decode(blob, version="v1", upto_seq=5)
    other = sn.encode(sn.Snapshot("v1", 2, snap.entries, {}, format=sn.FORMAT + 1))
    with pytest.raises(sn.SnapshotInvalid, match="format"):
        sn.decode(other, version="v1")
