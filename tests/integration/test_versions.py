"""Workflow versions, parking and patches end to end, on every backend.

Each ``Registry`` below plays one deploy of the application; a worker built
on it is a process running that deploy. Every turn is replayed from the store
(the ``env`` fixture turns the worker's cache off).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import keel
from keel.core.events import EventType
from keel.core.journal import JournalEntry
from keel.replay import check_replay
from keel.store.memory import MemoryStore

ran: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def _reset_ran() -> None:
    ran.clear()


@keel.step(name="ver.prepare")
def prepare(order: str) -> str:
    ran["prepare"] += 1
    return f"prepared {order}"


@keel.step(name="ver.gift_wrap")
def gift_wrap(note: str) -> str:
    ran["gift_wrap"] += 1
    return f"{note}, wrapped"


@keel.step(name="ver.ship")
def ship(note: str) -> str:
    ran["ship"] += 1
    return f"shipped ({note})"


# --- versions: the default version is a hash of the code --------------------------------


async def order_v1(order: str) -> str:
    note = await prepare(order)
    by = await keel.wait_for_signal("approve")
    return await ship(f"{note}, approved by {by}")


async def order_v2(order: str) -> str:
    note = await gift_wrap(await prepare(order))
    by = await keel.wait_for_signal("approve")
    return await ship(f"{note}, approved by {by}")


DEPLOY1 = keel.Registry()
V1 = keel.workflow(name="ver.order", registry=DEPLOY1)(order_v1)

# Deploy 2 changed the code and keeps the old version for the runs started on it.
DEPLOY2 = keel.Registry()
keel.workflow(name="ver.order", version=V1.version, current=False, registry=DEPLOY2)(order_v1)
V2 = keel.workflow(name="ver.order", registry=DEPLOY2)(order_v2)

# Deploy 2 without the old version.
ONLY_V2 = keel.Registry()
keel.workflow(name="ver.order", registry=ONLY_V2)(order_v2)

# --- patches: one pinned version, the code changed in place --------------------------------

PATCH_OLD = keel.Registry()
PATCH_NEW = keel.Registry()
PATCH_REUSED = keel.Registry()


@keel.workflow(name="ver.patched", version="1", registry=PATCH_OLD)
async def pricing_old(order: str) -> str:
    note = await prepare(order)
    by = await keel.wait_for_signal("approve")
    return await ship(f"{note}, approved by {by}")


@keel.workflow(name="ver.patched", version="1", registry=PATCH_NEW)
async def pricing_new(order: str) -> str:
    note = await prepare(order)
    if keel.patched("gift-wrap"):
        note = await gift_wrap(note)
    by = await keel.wait_for_signal("approve")
    if keel.patched("gift-wrap"):  # the same change, checked again after the wait
        by = by.upper()
    return await ship(f"{note}, approved by {by}")


@keel.workflow(name="ver.patched", version="1", registry=PATCH_REUSED)
async def pricing_reused(order: str) -> str:
    if keel.patched("gift-wrap"):  # the name reused for another, earlier change
        order = order.upper()
    note = await prepare(order)
    if keel.patched("gift-wrap"):
        note = await gift_wrap(note)
    by = await keel.wait_for_signal("approve")
    return await ship(f"{note}, approved by {by}")


# --- helpers ---------------------------------------------------------------------------------


async def wait_for(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def wait_waiting(client: keel.Client, run_id: str) -> None:
    """Until the run is suspended, waiting for its signal."""

    async def waiting() -> bool:
        info = await client.get(run_id)
        history = await client.history(run_id)
        return info.state is keel.RunState.SUSPENDED and any(
            e.type == "signal_awaited" for e in history
        )

    await wait_for(waiting, f"run {run_id} to wait for its signal")


def parks(caplog: pytest.LogCaptureFixture, run_id: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "keel.worker" and run_id in r.getMessage() and "parked it" in r.getMessage()
    ]


async def journal(client: keel.Client, run_id: str) -> list[JournalEntry]:
    records = await client.store.reads.history(run_id)
    return [JournalEntry(r.seq, EventType(r.type), r.command, r.data) for r in records]


# --- versions --------------------------------------------------------------------------------


async def test_code_change_resumes_a_suspended_run_on_its_old_version(env: Any) -> None:
    assert V1.version != V2.version
    async with env(registry=DEPLOY1) as (client, _):
        old = await client.start("ver.order", "o-1")
        await wait_waiting(client, old.run_id)
    async with env(registry=DEPLOY2) as (client, _):
        new = await client.start("ver.order", "o-2")  # by name: the current version
        await wait_waiting(client, new.run_id)
        for run in (old, new):
            await client.signal(run.run_id, "approve", "ana")
        assert await client.result(old.run_id, timeout=10) == (
            "shipped (prepared o-1, approved by ana)"
        )
        assert await client.result(new.run_id, timeout=10) == (
            "shipped (prepared o-2, wrapped, approved by ana)"
        )
        assert (await client.get(old.run_id)).version == V1.version
        assert (await client.get(new.run_id)).version == V2.version
    assert ran == Counter(prepare=2, gift_wrap=1, ship=2)


async def test_run_of_a_version_not_loaded_is_left_to_a_worker_that_has_it(
    env: Any, make_store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker claims only runs of the versions it has: a deploy without the
    old version never takes (nor parks) the old run, which says why it waits,
    and a deploy that has the version again finishes it."""
    caplog.set_level(logging.DEBUG, logger="keel.worker")
    async with env(registry=DEPLOY1) as (client, _):
        run = await client.start("ver.order", "o-3")
        await wait_waiting(client, run.run_id)
        before = await client.history(run.run_id)
    token = (await _record(make_store, run.run_id)).lease_token

    async with env(registry=ONLY_V2, park_delay=0.05) as (client, worker):
        await client.signal(run.run_id, "approve", "ana")  # due now
        fresh = await client.start("ver.order", "o-4")  # the worker runs v2 as usual
        await wait_waiting(client, fresh.run_id)
        # Claimed again after its signal, behind the old run in wake order: so
        # the worker has claimed while the old run was due, and passed it over.
        await client.signal(fresh.run_id, "approve", "bo")
        assert await client.result(fresh.run_id, timeout=10) == (
            "shipped (prepared o-4, wrapped, approved by bo)"
        )
        info = await client.get(run.run_id)
        assert info.waiting == (
            f"no worker has version {V1.version} of ver.order (live versions: {V2.version})"
        )
        assert (await client.get(fresh.run_id)).waiting is None
        listed = {r.run_id: r.waiting for r in (await client.list()).runs}
        assert listed == {run.run_id: info.waiting, fresh.run_id: None}
        [live] = await client.versions()
        assert (live.workflow, live.version, live.worker) == ("ver.order", V2.version, worker.owner)
    assert parks(caplog, run.run_id) == []

    record = await _record(make_store, run.run_id)
    assert record.state is keel.RunState.SUSPENDED and record.error is None
    assert record.lease_token == token and record.lease_owner is None  # never claimed
    async with keel.Client(make_store()) as client:
        # Nothing journaled; the signal is still in the mailbox.
        assert await client.history(run.run_id) == before
        assert await client.versions() == []  # the stopped worker forgot its versions

    async with env(registry=DEPLOY2) as (client, _):  # the old version is back
        assert await client.result(run.run_id, timeout=10) == (
            "shipped (prepared o-3, approved by ana)"
        )
    assert ran == Counter(prepare=2, gift_wrap=1, ship=2)


async def test_run_held_without_its_version_is_parked(
    env: Any, make_store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Parking stays as the fallback: a run a worker holds although it lacks
    its workflow (here claimed without a version filter) is released untouched."""
    caplog.set_level(logging.WARNING, logger="keel.worker")
    async with keel.Client(make_store(), registry=DEPLOY1) as client:
        run = await client.start("ver.order", "o-5")
    async with env(registry=keel.Registry(), park_delay=60.0) as (client, worker):
        [claimed] = await worker.store.runs.claim(worker.owner, limit=1, ttl=5.0)
        worker.adopt(claimed)

        async def parked() -> bool:
            return bool(parks(caplog, run.run_id))

        await wait_for(parked, "the run to be parked")
        info = await client.get(run.run_id)
        assert info.state is keel.RunState.SUSPENDED and info.lease_owner is None
        assert (
            info.waiting == f"no worker has version {V1.version} of ver.order (live versions: none)"
        )
        [record] = parks(caplog, run.run_id)
        assert "workflow 'ver.order' is not registered here" in record.getMessage()
    assert ran == Counter()


async def _record(make_store: Any, run_id: str) -> Any:
    async with keel.Client(make_store()) as client:
        return await client.store.reads.get_run(run_id)


async def test_bad_version_inputs_at_the_call_site(env: Any) -> None:
    kept_only = keel.Registry()
    keel.workflow(name="ver.order", version=V1.version, current=False, registry=kept_only)(order_v1)
    async with env(registry=kept_only) as (client, _):
        with pytest.raises(keel.WorkflowNotFoundError, match="no current version"):
            await client.start("ver.order", "o-6")
        assert (await client.list()).runs == []
    with pytest.raises(keel.ConfigurationError, match="two current versions"):
        keel.workflow(name="ver.order", registry=DEPLOY2)(pricing_new.fn)
    with pytest.raises(keel.ConfigurationError, match="park_delay"):
        keel.Worker(MemoryStore(), park_delay=0)


# --- patches ---------------------------------------------------------------------------------


async def test_patched_old_run_takes_the_old_path_new_run_the_new_one(env: Any) -> None:
    async with env(registry=PATCH_OLD) as (client, _):
        old = await client.start("ver.patched", "o-7")
        await wait_waiting(client, old.run_id)
    async with env(registry=PATCH_NEW) as (client, _):
        new = await client.start("ver.patched", "o-8")
        await wait_waiting(client, new.run_id)
        for run in (old, new):
            await client.signal(run.run_id, "approve", "ana")
        old_result = await client.result(old.run_id, timeout=10)
        new_result = await client.result(new.run_id, timeout=10)
        old_journal = await journal(client, old.run_id)
        new_journal = await journal(client, new.run_id)
    assert old_result == "shipped (prepared o-7, approved by ana)"
    assert new_result == "shipped (prepared o-8, wrapped, approved by ANA)"
    assert ran == Counter(prepare=2, gift_wrap=1, ship=2)
    assert not [e for e in old_journal if e.type is EventType.PATCHED]
    markers = [(e.seq, e.command) for e in new_journal if e.type is EventType.PATCHED]
    assert markers == [(2, "patch:gift-wrap#0")]  # once, right after the first step
    # Both journals replay deterministically against the patched code.
    assert check_replay(pricing_new, old_journal).result == old_result
    assert check_replay(pricing_new, new_journal).result == new_result


async def test_patch_name_reused_for_another_change_fails_the_run_clearly(env: Any) -> None:
    async with env(registry=PATCH_NEW) as (client, _):
        run = await client.start("ver.patched", "o-9")
        await wait_waiting(client, run.run_id)
        before = await client.history(run.run_id)
    async with env(registry=PATCH_REUSED) as (client, _):
        await client.signal(run.run_id, "approve", "ana")
        with pytest.raises(keel.RunFailedError) as info:
            await client.result(run.run_id, timeout=10)
        after = await client.history(run.run_id)
    err = info.value
    assert err.error_type == "keel.errors.PatchMismatchError"
    assert "patch 'gift-wrap' first at journal position 2" in err.message
    assert "a patch name marks one change" in err.message
    assert after[: len(before)] == before  # the journal is left intact
    assert [e.type for e in after[len(before) :]] == ["run_failed"]
    assert ran == Counter(prepare=1, gift_wrap=1)
