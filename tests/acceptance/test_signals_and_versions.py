"""Signals sent before anyone waits, and workflow code changed under a live run."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from tests.acceptance.apps import flows
from tests.acceptance.harness import APPS, FLOWS, Harness

pytestmark = pytest.mark.acceptance

V1 = f"{APPS}.versioned_v1"
V2 = f"{APPS}.versioned_v2"


def history_json(harness: Harness, run_id: str) -> list[dict[str, Any]]:
    doc = json.loads(harness.cli_ok("runs", "history", run_id, "--db", harness.db_url, "--json"))
    events: list[dict[str, Any]] = doc["events"]
    return events


async def test_signal_sent_before_the_wait_is_received(harness: Harness) -> None:
    """``keel signal`` before any worker ran the run: the signal is buffered and
    the workflow receives it when it reaches its wait."""
    run_id = "sig-1"
    db = ("--db", harness.db_url)
    out = harness.cli_ok(
        "start", flows.approval.name, '"order-7"', "--app", FLOWS, "--run-id", run_id, *db, "--json"
    )
    assert json.loads(out)["run_id"] == run_id
    decision = {"by": "alice", "approved": True}
    harness.cli_ok("signal", run_id, "approve", json.dumps(decision), *db)
    async with harness.client() as client:
        info = await client.get(run_id)
        assert info.state == "pending" and not harness.executions()  # nothing ran yet

        w = harness.worker()
        await harness.wait_finished(client, [run_id], alive=(w,))
        result = await client.result(run_id)
        history = await client.history(run_id)

    expected = {"prepared": "prepared order-7", "decision": decision}
    assert result == expected
    shown = json.loads(harness.cli_ok("runs", "show", run_id, *db, "--json"))
    assert shown["state"] == "completed" and shown["result"] == expected
    received = [e for e in history if e.type == "signal_received"]
    assert len(received) == 1 and received[0].data["payload"] == decision
    assert harness.started() == Counter({(run_id, "acc.prepare"): 1})


async def test_changed_code_fails_with_nondeterminism_error(harness: Harness) -> None:
    """v1 runs step a and waits for a signal; a worker with v2 (step c first,
    same name and declared version) must fail the run with a
    NondeterminismError naming the position, the record and the request, and
    leave the journal intact."""
    run_id = "ver-1"
    db = ("--db", harness.db_url)
    harness.cli_ok("start", "acc.versioned", "--app", V1, "--run-id", run_id, *db)
    async with harness.client() as client:
        w1 = harness.worker(V1)

        async def waiting() -> bool:
            info = await client.get(run_id)
            history = await client.history(run_id)
            return info.state == "suspended" and any(e.type == "signal_awaited" for e in history)

        await harness.wait_for(waiting, "v1 to wait for the signal", alive=(w1,))
        w1.terminate()
        assert w1.wait(timeout=15) == 0, w1.output()
        before = history_json(harness, run_id)

        w2 = harness.worker(V2)
        harness.cli_ok("signal", run_id, "go", '"!"', *db)
        infos = await harness.wait_finished(client, [run_id], alive=(w2,))
        assert w2.alive(), "the worker must survive a nondeterministic run"

    assert infos[run_id].state == "failed"
    shown = json.loads(harness.cli_ok("runs", "show", run_id, *db, "--json"))
    assert shown["state"] == "failed"
    error = shown["error"]
    assert error == infos[run_id].error
    assert error["type"] == "keel.errors.NondeterminismError", error
    position = next(e["seq"] for e in before if e["type"] == "step_completed")
    message = error["message"]
    assert f"journal position {position}" in message, message
    assert "step_completed of step 'acc.v.a'" in message, message  # what was recorded
    assert "asked for step 'acc.v.c'" in message, message  # what the code asked for

    after = history_json(harness, run_id)
    assert after[: len(before)] == before, "events before the failure changed"
    assert [e["type"] for e in after[len(before) :]] == ["run_failed"]
    assert [e["seq"] for e in after] == list(range(after[0]["seq"], after[0]["seq"] + len(after)))
    # Nothing of the new code ran against the old journal.
    assert harness.started() == Counter({(run_id, "acc.v.a"): 1})


DEPLOY1 = f"{APPS}.orders_deploy1"
DEPLOY2 = f"{APPS}.orders_deploy2"
KEPT_V1 = f"{APPS}.orders_kept_v1"


async def test_deploy_without_the_old_version_leaves_its_runs_until_it_returns(
    harness: Harness,
) -> None:
    """A run waits on deploy 1's code; deploy 2 changed the code: its worker
    does not claim the run (never fails nor parks it) and `keel runs show` says
    why it waits; deploy 2 with deploy 1's function kept in another module
    (renamed, ``current=False``) finishes it on the old code."""
    run_id = "ord-1"
    db = ("--db", harness.db_url)
    harness.cli_ok("start", "acc.orders", '"o-1"', "--app", DEPLOY1, "--run-id", run_id, *db)
    async with harness.client() as client:
        w1 = harness.worker(DEPLOY1)

        async def waiting() -> bool:
            history = await client.history(run_id)
            return any(e.type == "signal_awaited" for e in history)

        await harness.wait_for(waiting, "deploy 1 to wait for the signal", alive=(w1,))
        w1.terminate()
        assert w1.wait(timeout=15) == 0, w1.output()
        before = history_json(harness, run_id)
        version = (await client.get(run_id)).version

        w2 = harness.worker(DEPLOY2)
        harness.cli_ok("signal", run_id, "approve", '"ana"', *db)
        harness.cli_ok("start", "acc.orders", '"o-2"', "--app", DEPLOY2, "--run-id", "ord-2", *db)
        harness.cli_ok("signal", "ord-2", "approve", '"bo"', *db)
        # ord-2 was due after ord-1: once it is done, deploy 2 has passed ord-1 over.
        await harness.wait_finished(client, ["ord-2"], alive=(w2,))
        assert await client.result("ord-2") == "shipped (prepared o-2, wrapped, approved by bo)"
        v2 = (await client.get("ord-2")).version
        shown = json.loads(harness.cli_ok("runs", "show", run_id, *db, "--json"))
        assert shown["waiting"] == (
            f"no worker has version {version} of acc.orders (live versions: {v2})"
        )
        assert "parked it" not in w2.err.read_text()
        w2.terminate()
        assert w2.wait(timeout=15) == 0, w2.output()
        info = await client.get(run_id)
        assert info.state == "suspended" and info.lease_owner is None, info
        assert history_json(harness, run_id) == before  # nothing journaled meanwhile

        w3 = harness.worker(DEPLOY2, KEPT_V1)
        infos = await harness.wait_finished(client, [run_id], alive=(w3,))
        assert infos[run_id].state == "completed", infos[run_id]
        assert await client.result(run_id) == "shipped (prepared o-1, approved by ana)"
        assert infos[run_id].version == version
    assert "workflows=[acc.orders (2 versions)]" in w3.err.read_text()
    assert harness.started() == Counter(
        {
            (run_id, "acc.o.prepare"): 1,
            (run_id, "acc.o.ship"): 1,
            ("ord-2", "acc.o.prepare"): 1,
            ("ord-2", "acc.o.gift_wrap"): 1,
            ("ord-2", "acc.o.ship"): 1,
        }
    )
