"""kill -9 of a real ``keel worker`` in the middle of a saga's compensations."""

from __future__ import annotations

import pytest

from tests.acceptance.apps import sagas
from tests.acceptance.harness import APPS, Harness

pytestmark = pytest.mark.acceptance

SAGAS = f"{APPS}.sagas"


async def test_sigkill_after_the_first_of_three_compensations(harness: Harness) -> None:
    """The run ends as an uncrashed one does; no completed step or compensation
    runs again; the compensation in flight at the kill runs again."""
    async with harness.client() as client:
        w1 = harness.worker(SAGAS)
        await client.start(sagas.trip, "refund", run_id="crashy")
        await harness.wait_for(
            lambda: harness.started()[("crashy", "acc.saga.refund")],
            "the second compensation to start",
            alive=(w1,),
        )
        w1.kill()
        before = await client.history("crashy")
        assert [(e.type, e.name) for e in before[-2:]] == [
            ("step_failed", "acc.saga.fail"),
            ("step_completed", "acc.saga.unship"),
        ]

        harness.open_gate("refund")
        w2 = harness.worker(SAGAS)
        await client.start(sagas.trip, "", run_id="calm")  # the same saga, no crash
        infos = await harness.wait_finished(client, ["crashy", "calm"], alive=(w2,))
        crashed = await client.history("crashy")
        calm = await client.history("calm")

    crashy_error, calm_error = infos["crashy"].error or {}, infos["calm"].error or {}
    assert infos["crashy"].state == infos["calm"].state == "failed", crashy_error
    assert (crashy_error["type"], crashy_error["message"]) == (
        calm_error["type"],
        calm_error["message"],
    )
    assert [(e.type, e.command) for e in crashed] == [(e.type, e.command) for e in calm]
    assert [(e.seq, e.type, e.data) for e in crashed[: len(before)]] == [
        (e.seq, e.type, e.data) for e in before
    ]
    runs = {step: n for (run_id, step), n in harness.started().items() if run_id == "crashy"}
    assert runs == {
        "acc.saga.reserve": 1,
        "acc.saga.charge": 1,
        "acc.saga.ship": 1,
        "acc.saga.fail": 1,
        "acc.saga.unship": 1,  # compensated before the kill: never again
        "acc.saga.refund": 2,  # in flight at the kill: at least once
        "acc.saga.release": 1,
    }
    finished = [e for e in harness.executions() if e.step == "acc.saga.refund" and e.phase == "end"]
    assert [e.pid for e in finished if e.run_id == "crashy"] == [w2.pid]
