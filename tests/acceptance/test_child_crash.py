"""SIGKILL of a real ``keel worker`` right after a parent started a child.

The parent's next step blocks on a gate, and starts only after the write
that journaled child_started and created the child run committed; the kill
lands while it (and the child's own gated step) are in flight.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

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


async def test_sigkill_right_after_a_child_started(harness: Harness) -> None:
    run_id = "parent-1"
    child_id = f"{run_id}/child:acc.kid#0"
    async with harness.client() as client:
        w1 = harness.worker()
        await client.start(flows.parent, 4, "kid", run_id=run_id)

        def both_in_flight() -> bool:
            started = harness.started()
            return bool(
                started[(run_id, "acc.after_child")] and started[(child_id, "acc.in_child")]
            )

        await harness.wait_for(
            both_in_flight, "the parent's and the child's gated steps", alive=(w1,)
        )
        w1.kill()
        before = [e.type for e in await client.history(run_id)]
        assert before.count("child_started") == 1
        assert (await client.get(child_id)).state == "running"  # held by the dead worker

        harness.open_gate("kid")
        w2 = harness.worker()
        infos = await harness.wait_finished(client, [run_id, child_id], alive=(w2,))
        assert infos[run_id].state == "completed", infos[run_id].error
        assert await client.result(run_id) == [5, 50, 10]
        after = await client.history(run_id)
        kids = (await client.list(workflow="acc.kid")).runs

    assert [k.run_id for k in kids] == [child_id]  # exactly one child, never started again
    assert [e.type for e in after].count("child_started") == 1
    assert [e.type for e in after].count("child_completed") == 1
    runs = harness.started()
    assert runs[(run_id, "acc.before_child")] == 1  # journaled before the kill: once
    # In flight at the kill (gates shut): each ran again on the new worker, exactly twice.
    assert runs[(run_id, "acc.after_child")] == 2
    assert runs[(child_id, "acc.in_child")] == 2
    assert step_completions(after) == Counter({"acc.before_child": 1, "acc.after_child": 1})
