"""A code workflow's steps as its journal tells them (``Client.steps``, ``keel
runs steps``), on every backend: status, value, attempts, completion order."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import keel
from keel.store.sqlite import SQLiteStore
from tests.integration.test_cli import keel_cli

FAST = keel.RetryPolicy(max_attempts=3, initial_interval=0.01, max_interval=0.02, jitter=0.0)
tries: Counter[str] = Counter()
_lock = threading.Lock()


@keel.step(name="sv.flaky", retry=FAST)
def flaky(x: int) -> int:
    with _lock:
        tries[f"flaky:{x}"] += 1
        n = tries[f"flaky:{x}"]
    if n < 3:
        raise RuntimeError(f"try {n}")
    return x * 2


@keel.step(name="sv.double")
async def double(x: int) -> int:
    return x * 2


@keel.workflow(name="sv.flow")
async def flow(x: int) -> int:
    a = await flaky.aio(x)
    await keel.sleep(0.01)
    return await double.aio(a)


async def test_steps_show_status_values_and_attempts(env: Any) -> None:
    tries.clear()
    async with env() as (client, _):
        run = await client.start(flow, 5)
        assert await run.result(timeout=20) == 20
        steps = await client.steps(run.run_id)
    assert [(c.command, c.status) for c in steps] == [
        ("step:sv.flaky#0", "completed"),
        ("sleep:sleep#0", "fired"),
        ("step:sv.double#0", "completed"),
    ]
    flaky_view = steps[0]
    assert json.loads(flaky_view.value or b"null") == 10
    assert [a.outcome for a in flaky_view.attempts] == ["failed", "failed", "completed"]
    assert flaky_view.attempts[0].error is not None
    ended = sorted(steps, key=lambda c: c.last_seq)
    assert [c.command for c in ended] == [c.command for c in steps]  # completion order


def test_keel_runs_steps_prints_them(tmp_path: Path) -> None:
    tries.clear()
    db = tmp_path / "s.db"

    async def run_one() -> str:
        async with keel.Worker(SQLiteStore(db)) as worker:
            run = await worker.client().start(flow, 2)
            assert await run.result(timeout=20) == 8
            return run.run_id

    run_id = asyncio.run(run_one())
    shown = keel_cli("runs", "steps", run_id, "--db", str(db), "--json")
    assert shown.exit_code == 0, shown.output
    docs = json.loads(shown.stdout)
    assert [(d["command"], d["status"], len(d["attempts"])) for d in docs] == [
        ("step:sv.flaky#0", "completed", 3),
        ("sleep:sleep#0", "fired", 0),
        ("step:sv.double#0", "completed", 1),
    ]
    assert docs[0]["value"] == 4
    table = keel_cli("runs", "steps", run_id, "--db", str(db))
    assert "step:sv.flaky#0" in table.stdout and "completed" in table.stdout
