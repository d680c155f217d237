"""A code workflow's steps as its journal tells them (``Client.steps``, ``keel
runs steps``), on every backend: status, input, value, attempts, completion order."""

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
        history = await client.history(run.run_id)
    assert [(c.command, c.status) for c in steps] == [
        ("step:sv.flaky#0", "completed"),
        ("sleep:sleep#0", "fired"),
        ("step:sv.double#0", "completed"),
    ]
    flaky_view = steps[0]
    assert json.loads(flaky_view.value or b"null") == 10
    # Each step's input, journaled once (with its first attempt's outcome).
    assert json.loads(flaky_view.input or b"null") == {"x": 5}
    assert json.loads(steps[2].input or b"null") == {"x": 10}
    assert steps[1].input is None  # a sleep has no arguments
    flaky_events = [e for e in history if e.command == "step:sv.flaky#0"]
    assert ["input" in e.data for e in flaky_events] == [True, False, False]
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
    assert docs[0]["input"] == {"x": 2} and docs[2]["input"] == {"x": 4}
    assert docs[0]["args_hash"] and docs[1]["input"] is None
    table = keel_cli("runs", "steps", run_id, "--db", str(db))
    assert "step:sv.flaky#0" in table.stdout and "completed" in table.stdout
    assert "INPUT" in table.stdout and '{"x":2}' in table.stdout


@keel.step(name="sv.render", queue="sv-q")
def render(page: int, title: str) -> str:
    return f"{title}-{page}"


@keel.step(name="sv.measure")
def measure(text: str) -> int:
    return len(text)


@keel.workflow(name="sv.queued")
async def queued_flow(page: int) -> int:
    shown = await render.aio(page, title="t")
    return await measure.aio(shown * 1000)  # arguments over the journal's cap


async def test_dispatched_steps_show_their_input_and_large_inputs_their_size(env: Any) -> None:
    from keel.core.events import INPUT_CAP

    async with env(queues=["sv-q"]) as (client, _):
        run = await client.start(queued_flow, 3)
        assert await run.result(timeout=20) == 3000
        steps = await client.steps(run.run_id)
    rendered, measured = steps
    assert json.loads(rendered.input or b"null") == {"page": 3, "title": "t"}
    assert measured.input is None and measured.args_hash is not None
    assert measured.input_size is not None and measured.input_size > INPUT_CAP
