"""Journal snapshots of a run with a large step result, on every backend: the
snapshot refers to the fact instead of holding the value, and a worker that
resumes from it (every turn replayed from the store) sees the value whole."""

from __future__ import annotations

from typing import Any

import keel
from keel.core.facts import value_digest
from tests.integration._support import wait_until

TEXT = "snap" * 50_000  # 200 kB: above the 64 KiB threshold
VALUE = f'"{TEXT}"'.encode()


@keel.step(name="factsnap.blob")
def blob() -> str:
    return TEXT


@keel.step(name="factsnap.tick")
def tick(i: int) -> int:
    return i


@keel.workflow(name="factsnap.flow", snapshot_every=3)
async def flow() -> dict[str, Any]:
    text = await blob.aio()
    for i in range(6):
        await tick.aio(i)
    got = await keel.wait_for_signal("go")
    return {"size": len(text), "same": text == TEXT, "got": got}


async def test_a_snapshot_refers_to_the_fact_and_replays_whole(env: Any) -> None:
    async with env() as (client, worker):
        run = await client.start(flow)

        async def snapshot_taken() -> bytes | None:
            info = await client.get(run.run_id)
            snap = await worker.store.runs.load_snapshot(run.run_id)
            waiting = info.state is keel.RunState.SUSPENDED
            return snap.data if waiting and snap is not None else None

        data = await wait_until(snapshot_taken, "a snapshot of the waiting run", timeout=30)
        assert VALUE not in data and value_digest(VALUE).encode() in data
        await client.signal(run.run_id, "go", 7)
        assert await run.result(timeout=30) == {"size": len(TEXT), "same": True, "got": 7}
        assert await worker.store.facts.load(value_digest(VALUE)) == VALUE
