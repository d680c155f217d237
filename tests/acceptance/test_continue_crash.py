"""SIGKILL of a real ``keel worker`` around a continue-as-new switch.

``before``: the kill lands while the first run's last step is in flight, so
the switch has not been written; the next worker replays the run, runs that
step again and makes the switch. ``after``: the kill lands while the
successor's step is in flight, so the switch has committed; the next worker
picks up the successor. Either way the chain ends with the same result, with
exactly one run per generation, and no step whose result was journaled runs
again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from keel.worker.plan.ending import successor_id
from tests.acceptance.apps import flows
from tests.acceptance.harness import Harness, step_completions
from tests.pg import pg_url, postgres_server  # noqa: F401  (fixtures)

pytestmark = pytest.mark.acceptance


@pytest.fixture(params=["sqlite", "postgres"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    """Workers on one SQLite file, or on a fresh PostgreSQL database."""
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    h = Harness(tmp_path, db_url=url)
    try:
        yield h
    finally:
        h.cleanup()


@pytest.mark.parametrize("when", ["before", "after"])
async def test_sigkill_around_the_switch(harness: Harness, when: str) -> None:
    run_id = f"chain-{when}"
    ids = [run_id, successor_id(run_id, 1), successor_id(run_id, 2)]
    killed_in = 0 if when == "before" else 1  # the generation whose step is in flight
    gates = ["", "", ""]
    gates[killed_in] = "g"
    async with harness.client() as client:
        w1 = harness.worker()
        await client.start(flows.chain, 0, gates, run_id=run_id)

        def in_flight() -> bool:
            return bool(harness.started()[(ids[killed_in], "acc.generation")])

        await harness.wait_for(in_flight, f"the step of generation {killed_in}", alive=(w1,))
        w1.kill()
        first = await client.get(run_id)
        if when == "before":
            assert first.state == "running" and first.continued_to is None
            assert (await client.list(workflow="acc.chain")).runs[0].run_id == run_id
        else:
            assert first.state == "continued" and first.continued_to == ids[1]
            assert (await client.get(ids[1])).state == "running"  # held by the dead worker

        harness.open_gate("g")
        w2 = harness.worker()
        infos = await harness.wait_finished(client, ids, alive=(w2,))
        assert await client.result(run_id) == 0 + 10 + 20
        assert [infos[i].state for i in ids] == ["continued", "continued", "completed"]
        assert {infos[i].chain_id for i in ids} == {run_id}
        histories = {i: await client.history(i) for i in ids}
        runs = sorted(r.run_id for r in (await client.list(workflow="acc.chain")).runs)

    assert runs == sorted(ids)  # exactly one successor per switch
    for i, run in enumerate(ids):
        types = [e.type for e in histories[run]]
        assert types.count("run_continued") == (1 if i < 2 else 0)
        assert step_completions(histories[run]) == Counter({"acc.generation": 1})
    started = harness.started()
    # The step in flight at the kill ran again; every other step ran exactly once.
    assert [started[(run, "acc.generation")] for run in ids] == [
        2 if i == killed_in else 1 for i in range(3)
    ]
