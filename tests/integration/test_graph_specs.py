"""Graph specs stored by digest: saved by workers and client.start, loaded
(digest-checked) by a client that never imported the graph, and a graph
rebuilt from its spec alone replays recorded journals."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import keel
from keel.errors import ConfigurationError, NondeterminismError, StoreError, WorkflowError
from keel.graph import Graph
from keel.graph.spec import canonical, digest
from keel.graph.stored import load_spec, placeholder_graph, save_spec
from keel.replay import check_replay, journal_from_rows, load_journal
from keel.store.memory import MemoryStore
from keel.store.sqlite import SQLiteStore
from keel.worker.replaying import journal_of
from tests.integration._support import wait_until
from tests.replay import graph_app

GOLDEN = Path(__file__).parent.parent / "replay" / "golden"
SPEC = graph_app.invoices_wf.to_spec()
BATCH = [graph_app.Invoice("a", 900), graph_app.Invoice("b", 900)]


def small_graph(registry: keel.Registry) -> Any:
    g = Graph("specs.small")

    @g.node
    def double(x: int) -> int:
        return 2 * x

    g.approval("check", after="double")
    return g.build(registry=registry)


async def test_client_start_stores_the_spec_under_the_version() -> None:
    store = MemoryStore()
    registry = keel.Registry()
    flow = small_graph(registry)
    async with keel.Client(store, registry=registry) as client:  # no worker
        await client.start(flow, x=1)
        stored = await store.specs.load(flow.name, flow.version)
    assert stored == canonical(flow.to_spec())
    assert digest(json.loads(stored)) == flow.version


async def test_a_worker_stores_the_specs_of_the_graphs_it_registers() -> None:
    store = MemoryStore()
    registry = keel.Registry()
    flow = small_graph(registry)
    async with keel.Worker(store, registry=registry):
        assert await store.specs.list() == [(flow.name, flow.version)]


async def test_a_child_graph_has_its_spec_stored_when_a_workflow_starts_it(
    tmp_path: Path,
) -> None:
    child = small_graph(keel.Registry())  # a graph the worker does not register
    registry = keel.Registry()

    @keel.workflow(name="specs.parent", registry=registry)
    async def parent() -> str:
        handle = await keel.start_child(child, x=5, child_id="the-child")
        return handle.run_id

    db = tmp_path / "g.db"
    async with keel.Worker(SQLiteStore(db), registry=registry, poll_interval=0.02) as worker:
        run = await worker.client().start(parent)
        assert await run.result(timeout=20) == "the-child"
    # Nobody can run the child here, but any process can draw it.
    async with keel.Client(SQLiteStore(db), registry=keel.Registry()) as blind:
        assert await blind.store.specs.list() == [(child.name, child.version)]
        nodes = await blind.nodes("the-child")
        assert list(nodes) == ["double", "check"]


async def test_a_client_that_never_imported_the_graph_shows_and_approves_its_run(
    tmp_path: Path,
) -> None:
    registry = keel.Registry()
    flow = small_graph(registry)
    db = tmp_path / "g.db"
    async with keel.Worker(SQLiteStore(db), registry=registry, poll_interval=0.02) as worker:
        run = await worker.client().start(flow, x=21)
        # As another process would: its own store, a registry without the graph.
        async with keel.Client(SQLiteStore(db), registry=keel.Registry()) as other:

            async def waiting() -> bool:
                nodes = await other.nodes(run.run_id)
                return nodes["check"].status == "waiting_for_approval"

            await wait_until(waiting, "the approval wait", timeout=20)
            assert (await other.nodes(run.run_id))["double"].output == 42
            with pytest.raises(ConfigurationError, match="no approval node 'double'"):
                await other.approve(run.run_id, "double", actor="ana")
            assert await other.approve(run.run_id, "check", actor="ana") is True
        result = await run.result(timeout=20)
    assert result["check"]["decision"] == "approved" and result["check"]["actor"] == "ana"


async def test_a_spec_whose_digest_is_not_its_version_is_refused(tmp_path: Path) -> None:
    registry = keel.Registry()
    flow = small_graph(registry)
    db = tmp_path / "g.db"
    async with keel.Client(SQLiteStore(db), registry=registry) as client:
        run = await client.start(flow, x=1)
    # A damaged or foreign row: another graph's spec under this version.
    other = canonical(dict(flow.to_spec(), inputs=["x", "y"]))
    set_spec(db, other)
    async with keel.Client(SQLiteStore(db), registry=keel.Registry()) as blind:
        with pytest.raises(StoreError, match="damaged or foreign") as err:
            await blind.nodes(run.run_id)
        assert flow.version in str(err.value) and digest(json.loads(other)) in str(err.value)
        with pytest.raises(StoreError, match="damaged or foreign"):
            await blind.approve(run.run_id, "check", actor="ana")
        set_spec(db, b"\xff")
        with pytest.raises(StoreError, match="not JSON"):
            await load_spec(blind.store.specs, flow.name, flow.version)


async def test_a_graph_run_without_a_stored_spec_says_to_pass_the_app(tmp_path: Path) -> None:
    registry = keel.Registry()
    flow = small_graph(registry)
    db = tmp_path / "g.db"
    async with keel.Client(SQLiteStore(db), registry=registry) as client:
        run = await client.start(flow, x=1)
        set_spec(db, None)  # as for a run started before Keel stored specs
        assert list(await client.nodes(run.run_id)) == ["double", "check"]  # imported
    async with keel.Client(SQLiteStore(db), registry=keel.Registry()) as blind:
        with pytest.raises(ConfigurationError, match=r"spec is not stored.*pass --app"):
            await blind.nodes(run.run_id)


def set_spec(db: Path, spec: bytes | None) -> None:
    """Damage (or, with ``None``, delete) the stored specs, as only SQL can."""
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        if spec is None:
            conn.execute("DELETE FROM graph_specs")
        else:
            conn.execute("UPDATE graph_specs SET spec = ?", (spec,))


async def test_saving_another_spec_under_a_stored_version_is_refused() -> None:
    store = MemoryStore()
    await store.open()
    flow = small_graph(keel.Registry())
    await store.specs.save(flow.name, flow.version, b"{}")
    with pytest.raises(StoreError, match="another spec"):
        await save_spec(store.specs, flow)


# --- a graph from its spec alone ------------------------------------------------------------


def test_a_placeholder_graph_has_the_specs_version_and_its_nodes_never_run() -> None:
    built = placeholder_graph(SPEC)
    assert built.version == graph_app.invoices_wf.version
    assert built.to_spec() == SPEC
    assert keel.Registry().find(built.name) is None  # registered nowhere shared
    body = built.steps["pay"].body
    assert body is not None
    with pytest.raises(WorkflowError, match=r"node 'pay' of graph 'golden\.invoices'.*--app"):
        body.fn(summary=1)


@pytest.mark.parametrize(
    "name", ["graph_auto", "graph_review_approved", "graph_declined_held", "graph_waiting"]
)
def test_golden_graph_journals_replay_against_the_spec_alone(name: str) -> None:
    journal = load_journal(GOLDEN / f"{name}.json")
    code = check_replay(graph_app.invoices_wf, journal)
    spec_only = check_replay(placeholder_graph(SPEC), journal, check_args=False)
    assert (spec_only.status, spec_only.result) == (code.status, code.result)


@dataclass
class Parcel:
    weight: int  # fields not in alphabetical order: JSON objects re-encode sorted
    code: str


def parcel_graph(registry: keel.Registry) -> Any:
    g = Graph("specs.parcels")

    @g.node
    def pack(weight: int) -> Parcel:
        return Parcel(weight, "p-1")

    @g.node
    def ship(pack: Parcel) -> str:
        return f"{pack.code} ({pack.weight} kg)"

    return g.build(registry=registry)


async def test_values_from_a_spec_alone_replay_but_do_not_hash_as_recorded() -> None:
    registry = keel.Registry()
    flow = parcel_graph(registry)
    store = MemoryStore()
    async with keel.Worker(store, registry=registry, poll_interval=0.02) as worker:
        run = await worker.client().start(flow, weight=3)
        assert await run.result(timeout=20) == {"ship": "p-1 (3 kg)"}
        journal = journal_of(await store.reads.history(run.run_id))
        stored = await store.specs.load(flow.name, flow.version)
    assert stored is not None
    blind = placeholder_graph(json.loads(stored))
    assert check_replay(blind, journal, check_args=False).status == "completed"
    # Why arguments are not compared: without the annotation, ship's argument
    # is a plain dict, whose canonical JSON (sorted keys) is not the recorded one.
    with pytest.raises(NondeterminismError, match="arguments hash"):
        check_replay(blind, journal)
    assert check_replay(flow, journal).status == "completed"  # the code itself


def test_a_journal_the_graph_would_not_write_diverges_against_the_spec() -> None:
    rows = json.loads((GOLDEN / "graph_auto.json").read_text())
    triage = next(r for r in rows if r["command"] == "step:golden.invoices.triage#0")
    triage["data"]["result"] = "review"  # the journal says review; then pay ran anyway
    journal = journal_from_rows(rows)
    with pytest.raises(NondeterminismError) as err:
        check_replay(placeholder_graph(SPEC), journal, check_args=False)
    assert err.value.position == rows[-2]["seq"]  # pay#0: the code waits for sign_off


class Declined(Exception):
    pass


@keel.workflow(name="specs.ship", registry=keel.Registry())
async def ship_parcel(weight: int, code: str = "x") -> str:
    return f"{code}:{weight}"


def every_kind(registry: keel.Registry) -> Any:
    g = Graph("specs.every_kind")

    @g.node(cache=True, queue="slow", retry=keel.RetryPolicy(non_retryable=(Declined,)))
    def weigh(items: list[int], factor: int = 2) -> int:
        return sum(items) * factor

    def key(item: int) -> str:
        return f"i{item}"

    @g.map("items", key=key, tolerate=0.5)
    def check(item: int, weigh: int) -> bool:
        return item < weigh

    g.child("ship", ship_parcel, after="check")

    @g.node(on_error="skip")
    def report(check: list[bool], ship: str) -> str:
        return f"{ship} {check}"

    return g.build(registry=registry)


def test_every_kind_of_node_rebuilds_from_its_spec_alone() -> None:
    flow = every_kind(keel.Registry())
    built = placeholder_graph(json.loads(canonical(flow.to_spec())))
    assert (built.version, built.to_spec()) == (flow.version, flow.to_spec())
    assert built.to_mermaid() == flow.to_mermaid()
    assert 'n2(["ship (child)"])' in flow.to_mermaid()  # every kind has a shape
    assert '"ship" [shape=component' in flow.to_dot()


async def test_a_graph_with_a_child_node_replays_against_its_spec_alone() -> None:
    registry = keel.Registry()
    registry.add(ship_parcel)
    g = Graph("specs.with_child")

    @g.node
    def weigh(items: list[int]) -> int:
        return sum(items)

    g.child("ship", ship_parcel)  # `weight` from the node of that name, `code` an input

    @g.node
    def weight(weigh: int) -> int:
        return weigh

    flow = g.build(registry=registry)
    store = MemoryStore()
    async with keel.Worker(store, registry=registry, poll_interval=0.02) as worker:
        run = await worker.client().start(flow, items=[1, 2], code="c")
        assert await run.result(timeout=20) == {"ship": "c:3"}
        journal = journal_of(await store.reads.history(run.run_id))
    report = check_replay(placeholder_graph(flow.to_spec()), journal, check_args=False)
    assert (report.status, report.result) == ("completed", {"ship": "c:3"})
