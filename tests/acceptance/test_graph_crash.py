"""Graph runs survive SIGKILLed ``keel worker`` processes (one SQLite file):
mid-map with items in flight, and during an approval wait. Executions are
counted from the node bodies' own log, never from the journal."""

from __future__ import annotations

from collections import Counter

import pytest

import keel
from tests.acceptance.apps import graphs
from tests.acceptance.harness import Harness

pytestmark = pytest.mark.acceptance

APP = "tests.acceptance.apps.graphs"
N = 200
GATED = 50
SQUARE = "step:accg.fan.square#"


def item_runs(harness: Harness, run_id: str) -> Counter[int]:
    """How many times each map item's body started, by item index."""
    return Counter(
        int(e.phase[1:])
        for e in harness.executions()
        if e.run_id == run_id and e.step == "accg.fan.square" and e.phase.startswith("i")
    )


def completed_items(history: list[keel.HistoryEvent]) -> Counter[str]:
    return Counter(
        e.command
        for e in history
        if e.type == "step_completed"
        and e.command
        and e.command.startswith("step:accg.fan.square#")
    )


@pytest.mark.timeout(120)
async def test_sigkill_during_a_map_of_200_items(harness: Harness) -> None:
    async with harness.client() as client:
        harness.open_gate("open")
        w1 = harness.worker(APP)
        await client.start(graphs.fan_wf, n=N, gate="shut", gated=GATED, run_id="g-kill")
        await harness.wait_for(
            lambda: item_runs(harness, "g-kill")[GATED], f"item {GATED} to start", alive=(w1,)
        )
        w1.kill()
        before = await client.history("g-kill")
        ran_before = item_runs(harness, "g-kill")
        journaled_before = completed_items(before)
        assert journaled_before, "no item was journaled before the kill"
        assert f"{SQUARE}{GATED}" not in journaled_before  # it was in flight

        harness.open_gate("shut")
        w2 = harness.worker(APP)
        # The same graph and inputs, never crashed: what the crashed run must end with.
        clean = await client.start(graphs.fan_wf, n=N, gate="open", gated=GATED, run_id="g-ok")
        infos = await harness.wait_finished(client, ["g-kill", "g-ok"], timeout=90, alive=(w2,))
        assert infos["g-kill"].state == "completed", infos["g-kill"].error
        assert (
            await client.result("g-kill")
            == await clean.result()
            == {"total": sum(i * i for i in range(N))}
        )
        after = await client.history("g-kill")

    # Every item completed exactly once in the journal, in item order of its command.
    assert completed_items(after) == Counter(f"{SQUARE}{i}" for i in range(N))
    seqs = [e.seq for e in after]
    assert seqs == list(range(len(seqs)))
    assert after[: len(before)] == before  # nothing journaled before the kill changed
    runs = item_runs(harness, "g-kill")
    for command in journaled_before:  # journaled before the kill: never again
        index = int(command.rsplit("#", 1)[1])
        assert runs[index] == 1, f"item {index} ran {runs[index]} times"
    in_flight = set(ran_before) - {int(c.rsplit("#", 1)[1]) for c in journaled_before}
    assert GATED in in_flight and len(in_flight) <= 10  # the map's cap
    for index in in_flight:  # in flight at the kill: at least once, at most twice
        assert 1 <= runs[index] <= 2
    assert runs[GATED] == 2
    assert set(runs) == set(range(N))
    assert all(runs[i] == 1 for i in range(N) if i not in in_flight)


@pytest.mark.timeout(120)
async def test_sigkill_during_an_approval_wait(harness: Harness) -> None:
    async with harness.client() as client:
        w1 = harness.worker(APP)
        run = await client.start(graphs.review_wf, doc="memo", run_id="g-review")

        async def awaiting() -> bool:
            history = await client.history(run.run_id)
            return history[-1].type == "signal_awaited"

        await harness.wait_for(awaiting, "the approval wait", alive=(w1,))
        w1.kill()
        assert await client.approve(run.run_id, "sign_off", actor="ana", comment="ok")
        assert not await client.approve(run.run_id, "sign_off", actor="bob")  # the first stands
        w2 = harness.worker(APP)
        infos = await harness.wait_finished(client, [run.run_id], alive=(w2,))
        assert infos[run.run_id].state == "completed", infos[run.run_id].error
        assert await client.result(run.run_id) == {"publish": "MEMO approved by ana"}
        history = await client.history(run.run_id)
    [decision] = [e for e in history if e.type == "signal_received"]
    assert decision.data["payload"]["actor"] == "ana"
    started = harness.started()
    assert started[(run.run_id, "accg.review.prepare")] == 1
    assert started[(run.run_id, "accg.review.publish")] == 1
    assert started[(run.run_id, "accg.review.shelve")] == 0
