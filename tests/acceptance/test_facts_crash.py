"""A run whose large step result is stored as a fact survives a SIGKILLed
``keel worker``: the next worker replays the journal (the reference resolved
from the facts table) and the step never runs again."""

from __future__ import annotations

import sqlite3

import pytest

from keel.core.facts import value_digest
from tests.acceptance.apps import facts
from tests.acceptance.harness import Harness

pytestmark = pytest.mark.acceptance

APP = "tests.acceptance.apps.facts"


@pytest.mark.timeout(90)
async def test_sigkill_after_a_large_result_was_journaled(harness: Harness) -> None:
    async with harness.client() as client:
        w1 = harness.worker(APP, lease_ttl=2.0)
        await client.start(facts.flow, "xy", "go", run_id="f-kill")
        await harness.wait_for(
            lambda: harness.started()[("f-kill", "accf.wait")], "the gated step", alive=(w1,)
        )
        w1.kill()
        journaled = [e.command for e in await client.history("f-kill")]
        assert "step:accf.blob#0" in journaled  # durable before the next step started

        harness.open_gate("go")
        w2 = harness.worker(APP, lease_ttl=2.0)
        infos = await harness.wait_finished(client, ["f-kill"], timeout=60, alive=(w2,))
        assert infos["f-kill"].state == "completed", infos["f-kill"].error
        assert await client.result("f-kill") == facts.summary(facts.text_of("xy"))

    assert harness.started()[("f-kill", "accf.blob")] == 1  # replayed, never run again
    value = f'"{facts.text_of("xy")}"'.encode()
    with sqlite3.connect(harness.db_path) as conn:
        stored = conn.execute("SELECT digest, length(data) FROM facts").fetchall()
        [row] = conn.execute(
            "SELECT data FROM events WHERE run_id = 'f-kill' AND command = 'step:accf.blob#0'"
        ).fetchall()
    assert stored == [(value_digest(value), len(value))]
    assert value_digest(value).encode() in row[0] and len(row[0]) < 400
