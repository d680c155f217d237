"""Record the golden journals: ``python -m tests.replay.record_golden [--force]``.

One run per scenario of this project's example workflows (the golden app and
the demo app, ``keel.demo_app``), each journal written to ``golden/<run id>.json``.
Existing files are kept unless ``--force`` is given: a golden journal is only
worth anything if it was recorded with the *old* code, so regenerate one only
for a deliberate, documented break.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import keel
from keel import demo_app
from keel.replay import dump_journal, journal_filename
from keel.store.sqlite import SQLiteStore

from . import golden_app, graph_app

HERE = Path(__file__).parent / "golden"


def golden_registry() -> keel.Registry:
    """Every workflow that has golden journals."""
    registry = keel.Registry()
    registry.add(golden_app.golden_order)
    registry.add(golden_app.golden_saga_cancelled)
    registry.add(demo_app.process_order)
    graph_app.invoices_wf.register(registry)
    return registry


Scenario = Callable[[keel.Client, str], Awaitable[None]]


async def golden_order(client: keel.Client, run_id: str) -> None:
    order = golden_app.Order("o-1", Decimal("12.50"), ["book", "lamp"])
    run = await client.start(golden_app.golden_order, order, run_id=run_id)
    await client.signal(run.run_id, "approve", "ana")
    await run.result(timeout=30)


def _demo_order(n: int) -> demo_app.Order:
    return demo_app.Order(f"G-{n}", "KEEL-MUG", 2, 2400)


async def demo_shipped(client: keel.Client, run_id: str) -> None:
    # The flaky charge fails twice and is retried: its attempts are journaled too.
    run = await client.start(demo_app.process_order, _demo_order(1), 0.01, run_id=run_id)
    await client.signal(run.run_id, "approve", demo_app.Approval("ana"))
    await run.result(timeout=30)


async def demo_rejected(client: keel.Client, run_id: str) -> None:
    run = await client.start(demo_app.process_order, _demo_order(2), 0.01, run_id=run_id)
    await client.signal(run.run_id, "approve", demo_app.Approval("bob", approved=False))
    await run.result(timeout=30)


async def demo_not_approved(client: keel.Client, run_id: str) -> None:
    run = await client.start(
        demo_app.process_order, _demo_order(3), 0.01, approval_timeout=0.05, run_id=run_id
    )
    await run.result(timeout=30)


async def demo_waiting(client: keel.Client, run_id: str) -> None:
    """A run still in flight: suspended, waiting for its approval (what a deploy must not break)."""
    await client.start(
        demo_app.process_order, _demo_order(4), 0.01, approval_timeout=3600.0, run_id=run_id
    )
    for _ in range(300):
        info = await client.get(run_id)
        history = await client.history(run_id)
        if info.state is keel.RunState.SUSPENDED and history[-1].type == "signal_awaited":
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"run {run_id} did not start waiting for its approval")


async def golden_saga_cancelled(client: keel.Client, run_id: str) -> None:
    """A saga cancelled while it waits: cleanup steps and compensations run."""
    saga = await client.start(golden_app.golden_saga_cancelled, "rome", run_id=run_id)
    for _ in range(3000):  # until it waits for the signal (30 s at most)
        if any(e.type == "signal_awaited" for e in await client.history(saga.run_id)):
            break
        await asyncio.sleep(0.01)
    await client.cancel(saga.run_id)
    try:
        await saga.result(timeout=30)
    except keel.RunCancelledError:
        return
    raise RuntimeError(f"run {run_id} was not cancelled")


def _invoices(*totals: int) -> list[graph_app.Invoice]:
    return [graph_app.Invoice(f"inv-{i}", t) for i, t in enumerate(totals)]


async def graph_auto(client: keel.Client, run_id: str) -> None:
    """Small invoices: the auto branch, no approval, no alert."""
    run = await client.start(graph_app.invoices_wf, batch=_invoices(10, 20, 30), run_id=run_id)
    await run.result(timeout=30)


async def graph_review_approved(client: keel.Client, run_id: str) -> None:
    """Large invoices: the review branch, approved; the rule fires."""
    run = await client.start(graph_app.invoices_wf, batch=_invoices(1500, 1600), run_id=run_id)
    await client.approve(run.run_id, "sign_off", actor="ana", comment="fine")
    await run.result(timeout=30)


async def graph_declined_held(client: keel.Client, run_id: str) -> None:
    """The payment fails after its retries: the error route holds it."""
    run = await client.start(graph_app.invoices_wf, batch=_invoices(7), run_id=run_id)
    await run.result(timeout=30)


async def graph_waiting(client: keel.Client, run_id: str) -> None:
    """In flight when recorded: waiting for its approval."""
    await client.start(graph_app.invoices_wf, batch=_invoices(900, 900), run_id=run_id)
    for _ in range(600):
        history = await client.history(run_id)
        if history[-1].type == "signal_awaited":
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"run {run_id} did not start waiting for its approval")


SCENARIOS: dict[str, Scenario] = {
    "golden_order": golden_order,
    "demo_shipped": demo_shipped,
    "demo_rejected": demo_rejected,
    "demo_not_approved": demo_not_approved,
    "demo_waiting": demo_waiting,
    "golden_saga_cancelled": golden_saga_cancelled,
    "graph_auto": graph_auto,
    "graph_review_approved": graph_review_approved,
    "graph_declined_held": graph_declined_held,
    "graph_waiting": graph_waiting,
}


async def main(force: bool) -> None:
    HERE.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        registry = golden_registry()
        worker = keel.Worker(
            SQLiteStore(Path(tmp) / "g.db"), registry=registry, cache=False, poll_interval=0.05
        )
        async with worker:
            client = keel.Client(worker.store, registry=registry, worker=worker)
            for run_id, scenario in SCENARIOS.items():
                path = HERE / journal_filename(run_id)
                if path.exists() and not force:
                    print(f"kept     {path.relative_to(HERE.parent)}")
                    continue
                await scenario(client, run_id)
                dump_journal(await worker.store.reads.history(run_id), path)
                print(f"recorded {path.relative_to(HERE.parent)}")


if __name__ == "__main__":
    asyncio.run(main(force="--force" in sys.argv[1:]))
