"""``keel graph show``, ``keel approve`` and ``keel replay`` of a graph run, in a
real ``keel`` subprocess that has no ``--app`` and cannot import the graph's
module (it runs in an empty directory): the graph comes from its stored spec.
On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import keel
from keel.replay import FROM_SPEC
from keel.store import open_store
from tests import pg
from tests.integration._support import wait_until
from tests.replay import graph_app

KEEL = str(Path(sys.executable).parent / "keel")
BATCH = [graph_app.Invoice("a", 900), graph_app.Invoice("b", 900)]


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "postgres":
        pg.require_postgres()
        found = pg.fresh_database_url()
        yield found
        pg.drop_database_later(found)
    else:
        yield f"sqlite:///{tmp_path / 'g.db'}"


def keel_elsewhere(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``keel ARGS`` in a fresh process run in ``cwd``, where neither the tests
    nor the graph's module can be imported."""
    return subprocess.run(
        [KEEL, *args], cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=120
    )


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KEEL_DATABASE_URL")}


def set_spec(url: str, spec: bytes | None) -> None:
    """Damage (or, with ``None``, delete) the stored specs, as only SQL can."""
    sql = "DELETE FROM {t}" if spec is None else "UPDATE {t} SET spec = %s"
    if url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn, conn:
            conn.execute(
                sql.format(t="graph_specs").replace("%s", "?"), () if spec is None else (spec,)
            )
    else:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.format(t="keel.graph_specs"), () if spec is None else (spec,))


async def start_waiting_run(worker: keel.Worker, run_id: str) -> None:
    client = worker.client()
    await client.start(graph_app.invoices_wf, batch=BATCH, run_id=run_id)

    async def waiting() -> bool:
        # Suspended, not just "the last event is the wait": the rule's condition
        # (alert_finance) runs beside the approval branch and, on a busy machine,
        # is journaled after signal_awaited.
        if (await client.get(run_id)).state is not keel.RunState.SUSPENDED:
            return False
        return any(e.type == "signal_awaited" for e in await client.history(run_id))

    await wait_until(waiting, "the approval wait", timeout=30)


async def test_show_approve_and_replay_a_graph_run_without_its_code(
    url: str, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # The subprocess really cannot import the graph (the proof that no code is needed).
    probe = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", "import tests.replay.graph_app"],
        cwd=elsewhere, env=clean_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert "No module named 'tests" in probe.stderr
    worker = keel.Worker(open_store(url), poll_interval=0.02)
    await worker.start()
    try:
        await start_waiting_run(worker, "inv-1")
        shown = await asyncio.to_thread(
            keel_elsewhere, elsewhere, "graph", "show", "inv-1", "--db", url, "--json"
        )
        assert shown.returncode == 0, shown.stderr
        nodes = {n["node"]: n for n in json.loads(shown.stdout)}
        assert list(nodes) == list(graph_app.invoices_wf.nodes)
        assert nodes["score"]["status"] == "completed" and nodes["score"]["items"] == [2, 2]
        assert nodes["triage"]["label"] == "review"
        assert nodes["sign_off"]["status"] == "waiting_for_approval"

        approved = await asyncio.to_thread(
            keel_elsewhere, elsewhere, "approve", "inv-1", "sign_off", "--actor", "ana",
            "--db", url,
        )  # fmt: skip
        assert approved.returncode == 0, approved.stderr
        assert approved.stdout == "sign_off of run inv-1 approved by ana\n"
        assert await worker.client().result("inv-1", timeout=30) == {"pay": "paid 3600"}
    finally:
        await worker.stop()

    drawn = await asyncio.to_thread(
        keel_elsewhere, elsewhere, "graph", "show", "inv-1", "--db", url, "--mermaid"
    )
    assert drawn.returncode == 0, drawn.stderr
    assert '[/"sign_off (approval): completed (approved)"/]' in drawn.stdout
    checked = await asyncio.to_thread(keel_elsewhere, elsewhere, "replay", "--db", url, "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    report = json.loads(checked.stdout)
    assert (report["passed"], report["ok"], report["diverged"]) == (True, 1, 0)
    [verdict] = report["results"]
    assert (verdict["run_id"], verdict["outcome"]) == ("inv-1", "completed")
    assert verdict["message"] == FROM_SPEC
    history = await asyncio.to_thread(
        keel_elsewhere, elsewhere, "runs", "history", "inv-1", "--db", url
    )
    assert history.returncode == 0 and "golden.invoices.pay" in history.stdout


async def test_a_damaged_or_missing_spec_is_refused_clearly(url: str, tmp_path: Path) -> None:
    async with keel.Worker(open_store(url), poll_interval=0.02) as worker:
        await start_waiting_run(worker, "inv-2")
    version = graph_app.invoices_wf.version

    set_spec(url, b'{"format":1,"graph":"golden.invoices","inputs":[],"nodes":[]}')
    shown = await asyncio.to_thread(keel_elsewhere, tmp_path, "graph", "show", "inv-2", "--db", url)
    assert shown.returncode == 1 and "Traceback" not in shown.stderr
    assert shown.stderr.startswith("error: the stored spec of graph 'golden.invoices' version")
    assert "damaged or foreign" in shown.stderr and version in shown.stderr
    decided = await asyncio.to_thread(
        keel_elsewhere, tmp_path, "approve", "inv-2", "sign_off", "--actor", "ana", "--db", url
    )
    assert decided.returncode == 1 and "damaged or foreign" in decided.stderr
    checked = await asyncio.to_thread(keel_elsewhere, tmp_path, "replay", "--db", url, "--json")
    [verdict] = json.loads(checked.stdout)["results"]
    assert verdict["status"] == "skipped" and "damaged or foreign" in verdict["message"]

    set_spec(url, None)  # a run started before Keel stored specs
    shown = await asyncio.to_thread(keel_elsewhere, tmp_path, "graph", "show", "inv-2", "--db", url)
    assert shown.returncode == 1 and "pass --app MODULE" in shown.stderr
    # With the graph's module, the imported graph draws it.
    repo = Path(__file__).parent.parent.parent
    with_app = await asyncio.to_thread(
        keel_elsewhere, repo, "graph", "show", "inv-2", "--db", url, "--json",
        "--app", "tests.replay.graph_app",
    )  # fmt: skip
    assert with_app.returncode == 0, with_app.stderr
    assert {n["node"]: n["status"] for n in json.loads(with_app.stdout)}["sign_off"] == (
        "waiting_for_approval"
    )
