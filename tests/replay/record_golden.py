"""Record the golden journals: ``python -m tests.replay.record_golden``."""

from __future__ import annotations

import asyncio
import tempfile
from decimal import Decimal
from pathlib import Path

import keel
from keel.store.sqlite import SQLiteStore
from keel.testing.replay import dump_journal

from .golden_app import Order, golden_order, golden_saga_cancelled, registry

HERE = Path(__file__).parent / "golden"


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        worker = keel.Worker(SQLiteStore(Path(tmp) / "g.db"), registry=registry, cache=False)
        async with worker:
            client = keel.Client(worker.store, registry=registry, worker=worker)
            run = await client.start(
                golden_order, Order("o-1", Decimal("12.50"), ["book", "lamp"]), run_id="golden-1"
            )
            await client.signal(run.run_id, "approve", "ana")
            print(await run.result(timeout=30))
            dump_journal(await worker.store.load_events(run.run_id), HERE / "golden_order.json")

            saga = await client.start(golden_saga_cancelled, "rome", run_id="golden-2")
            for _ in range(3000):  # until it waits for the signal (30 s at most)
                if any(e.type == "signal_awaited" for e in await client.history(saga.run_id)):
                    break
                await asyncio.sleep(0.01)
            await client.cancel(saga.run_id)
            try:
                await saga.result(timeout=30)
            except keel.RunCancelledError:
                print("golden-2 cancelled")
            path = HERE / "golden_saga_cancelled.json"
            dump_journal(await worker.store.load_events(saga.run_id), path)


if __name__ == "__main__":
    asyncio.run(main())
