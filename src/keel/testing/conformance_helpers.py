"""Helpers shared by the store conformance suite (re-exported by ``conformance``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from keel.core.states import RunState
from keel.store import ports
from keel.store.base import Lease, NewEvent, NewRun, RunRecord
from keel.store.ports import Finish, Store, Suspend, Turn

StoreFactory = Callable[[], Store]
ClockedStoreFactory = Callable[[Callable[[], float]], Store]
Body = Callable[[Store], Awaitable[None]]

#: ``Store`` attribute -> the protocol it implements.
CAPABILITIES: dict[str, type] = {
    "runs": ports.RunJournal,
    "mailbox": ports.Mailbox,
    "tasks": ports.TaskQueues,
    "keys": ports.IdempotencyKeys,
    "facts": ports.Facts,
    "schedules": ports.Schedules,
    "reads": ports.OperatorReads,
    "changes": ports.ChangeFeed,
    "workers": ports.WorkerRegistry,
    "admin": ports.RunAdmin,
}

CANCELLED = NewEvent("run_cancelled", None, b"{}")
SHORT_TTL = 0.05  # seconds; tests wait for expiry on the store clock, never sleep blindly


def assert_implements_the_ports(store: object) -> None:
    """``store`` has every member of :class:`~keel.store.ports.Store`, and each of its
    capabilities every method of its protocol."""
    for name in ("url", "open", "close", "now", *CAPABILITIES):
        assert hasattr(store, name), f"the store has no {name!r}"
    for name, protocol in CAPABILITIES.items():
        capability = getattr(store, name)
        for method in (m for m in vars(protocol) if not m.startswith("_")):
            assert callable(getattr(capability, method, None)), f"store.{name}.{method} is missing"


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
    _, lease, created = await store.runs.create(new_run(run_id), lease_owner=owner, lease_ttl=ttl)
    assert created and lease is not None
    return lease


async def suspended(store: Store, run_id: str, wake_at: float | None) -> Lease:
    """Create ``run_id`` and suspend it until ``wake_at``; return the dropped lease."""
    lease = await leased(store, run_id)
    await store.runs.commit(lease, Turn(1, [], end=Suspend(wake_at)))
    return lease


async def finished(store: Store, run_id: str) -> Lease:
    """Create ``run_id`` and complete it."""
    lease = await leased(store, run_id)
    await store.runs.commit(lease, Turn(1, [], end=Finish(RunState.COMPLETED, result=b"1")))
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
    return [c.lease.run_id for c in await store.runs.claim(owner, limit=limit, ttl=30.0)]


async def get(store: Store, run_id: str) -> RunRecord:
    run = await store.reads.get_run(run_id)
    assert run is not None
    return run


def child_run(run_id: str, parent: str, parent_close: str = "cancel", depth: int = 1) -> NewRun:
    """A child run of ``parent`` (workflow ``child_wf``)."""
    data = f'{{"child":"{run_id}"}}'.encode()
    return NewRun(
        run_id,
        "child_wf",
        "v1",
        data,
        NewEvent("run_started", None, data),
        parent_run_id=parent,
        parent_close=parent_close,
        depth=depth,
    )


def started(n: int) -> NewEvent:
    """The journal event a parent writes with the start of its ``n``-th child."""
    return NewEvent("child_started", f"child:child_wf#{n}", f'{{"n":{n}}}'.encode())
