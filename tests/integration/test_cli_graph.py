"""``keel graph show``, ``keel approve``, ``keel reject`` on a real SQLite file
with a worker running the graph."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import keel
from keel.store.sqlite import SQLiteStore
from tests.integration._support import wait_until
from tests.integration.test_cli import assert_clean_error, keel_cli
from tests.replay import graph_app

APP = "tests.replay.graph_app"


async def waiting_run(path: Path, run_id: str) -> keel.Worker:
    worker = keel.Worker(SQLiteStore(path), poll_interval=0.02)
    await worker.start()
    client = worker.client()
    batch = [graph_app.Invoice("a", 900), graph_app.Invoice("b", 900)]
    await client.start(graph_app.invoices_wf, batch=batch, run_id=run_id)

    async def waiting() -> bool:
        # Suspended, not just "the last event is the wait": the rule's condition
        # (alert_finance) runs beside the approval branch and, on a busy machine,
        # is journaled after signal_awaited.
        if (await client.get(run_id)).state is not keel.RunState.SUSPENDED:
            return False
        return any(e.type == "signal_awaited" for e in await client.history(run_id))

    await wait_until(waiting, "the approval wait", timeout=20)
    return worker


async def test_show_then_approve_from_the_command_line(tmp_path: Path) -> None:
    db = str(tmp_path / "g.db")
    worker = await waiting_run(tmp_path / "g.db", "inv-1")
    try:
        shown = await asyncio.to_thread(
            keel_cli, "graph", "show", "inv-1", "--app", APP, "--db", db, "--json"
        )
        assert shown.exit_code == 0, shown.output
        nodes = {n["node"]: n for n in json.loads(shown.stdout)}
        assert nodes["score"]["status"] == "completed" and nodes["score"]["items"] == [2, 2]
        assert nodes["triage"]["label"] == "review"
        assert nodes["sign_off"]["status"] == "waiting_for_approval"
        assert nodes["pay"]["status"] == "pending"
        # Each node's input as journaled: a map's, one per item.
        assert nodes["summary"]["input"] == {"score": [1800, 1800]}
        assert nodes["score"]["input"] == [
            {"inv": {"id": "a", "total": 900}},
            {"inv": {"id": "b", "total": 900}},
        ]
        assert nodes["sign_off"]["input"] is None  # an approval runs no step

        table = await asyncio.to_thread(
            keel_cli, "graph", "show", "inv-1", "--app", APP, "--db", db
        )
        assert "waiting_for_approval" in table.stdout and "completed (review)" in table.stdout
        drawn = await asyncio.to_thread(
            keel_cli, "graph", "show", "inv-1", "--app", APP, "--db", db, "--mermaid"
        )
        assert drawn.stdout.startswith("flowchart TD\n")
        assert '[/"sign_off (approval): waiting_for_approval"/]' in drawn.stdout

        wrong = await asyncio.to_thread(
            keel_cli, "approve", "inv-1", "pay", "--actor", "ana", "--app", APP, "--db", db
        )
        assert_clean_error(wrong, 1, "no approval node 'pay'", "its approvals: sign_off")
        ok = await asyncio.to_thread(
            keel_cli, "approve", "inv-1", "sign_off", "--actor", "ana", "--comment", "fine",
            "--app", APP, "--db", db,
        )  # fmt: skip
        assert ok.exit_code == 0 and ok.stdout == "sign_off of run inv-1 approved by ana\n"
        again = await asyncio.to_thread(
            keel_cli, "reject", "inv-1", "sign_off", "--actor", "bob", "--app", APP, "--db", db
        )
        assert again.stdout == "sign_off of run inv-1 was decided before: nothing changed\n"
        assert await worker.client().result("inv-1", timeout=20) == {"pay": "paid 3600"}
    finally:
        await worker.stop()
    done = await asyncio.to_thread(
        keel_cli, "graph", "show", "inv-1", "--app", APP, "--db", db, "--json"
    )
    nodes = {n["node"]: n for n in json.loads(done.stdout)}
    assert nodes["sign_off"]["label"] == "approved"
    assert nodes["sign_off"]["output"]["comment"] == "fine"
    assert nodes["pay"]["status"] == "completed"


def test_a_run_that_is_no_graph_is_refused(tmp_path: Path) -> None:
    db = str(tmp_path / "g.db")
    missing = keel_cli("graph", "show", "nope", "--app", APP, "--db", db)
    assert missing.exit_code == 1
