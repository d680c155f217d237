"""The dashboard's run page shows a graph run's nodes (statuses, outputs and
the Mermaid text) from the graph's stored spec: the dashboard never imported
the graph (it is registered only in the worker's own registry)."""

from __future__ import annotations

import contextlib
import html
import sqlite3
from pathlib import Path

import httpx

import keel
from keel.graph import Graph
from keel.store.sqlite import SQLiteStore
from keel.ui import create_app
from keel.ui.format import run_path
from tests.integration._support import wait_until


def build(registry: keel.Registry) -> keel.GraphWorkflow:
    g = Graph("ui.graph")

    @g.node
    def double(x: int) -> int:
        return 2 * x

    g.approval("check", after="double")

    @g.node(after=("check", "approved"))
    def done(double: int) -> str:
        return f"done {double}"

    return g.build(registry=registry)


CODE = keel.Registry()


@keel.workflow(name="ui.graph.code", registry=CODE)
async def code_flow() -> int:
    return 1


async def test_the_run_page_shows_a_graph_runs_nodes_from_its_stored_spec(tmp_path: Path) -> None:
    registry = keel.Registry()
    flow = build(registry)
    db = tmp_path / "ui.db"
    async with keel.Worker(SQLiteStore(db), registry=registry, poll_interval=0.02) as worker:
        run = await worker.client().start(flow, x=21)

        async def waiting() -> bool:
            return (await worker.client().history(run.run_id))[-1].type == "signal_awaited"

        await wait_until(waiting, "the approval wait", timeout=20)
    store = SQLiteStore(db)
    await store.open()
    try:
        assert keel.Registry().find(flow.name) is None
        transport = httpx.ASGITransport(app=create_app(store))
        async with httpx.AsyncClient(transport=transport, base_url="http://ui") as client:
            page = html.unescape((await client.get(run_path(run.run_id))).text)
            assert "Graph nodes" in page
            assert '<tr data-node="double"><td>double</td><td>node</td>' in page
            assert '<td class="ns-completed">completed</td>' in page
            assert '<td class="ns-waiting_for_approval">waiting_for_approval</td>' in page
            assert '<td class="ns-pending">pending</td>' in page
            assert 'n0["double: completed"]' in page  # the Mermaid text, statuses drawn in
            assert '[/"check (approval): waiting_for_approval"/]' in page

            with contextlib.closing(sqlite3.connect(db)) as conn, conn:
                conn.execute("UPDATE graph_specs SET spec = ?", (b"{}",))
            damaged = html.unescape((await client.get(run_path(run.run_id))).text)
            assert "Graph nodes" in damaged and "damaged or foreign" in damaged
            assert "ns-completed" not in damaged
    finally:
        await store.close()


async def test_a_code_workflows_run_page_has_no_graph_section(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "ui.db")
    async with keel.Client(store, registry=CODE) as client:
        run = await client.start(code_flow)
        transport = httpx.ASGITransport(app=create_app(store))
        async with httpx.AsyncClient(transport=transport, base_url="http://ui") as http:
            page = (await http.get(run_path(run.run_id))).text
    assert f"{run.run_id}" in page and "Graph nodes" not in page
