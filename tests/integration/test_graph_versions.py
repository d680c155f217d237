"""Graph versions end to end, on every backend: a run resumes on the structure
it started on, a changed decision function does not reroute a run in flight,
and a worker without a run's version leaves it alone."""

from __future__ import annotations

from typing import Any, Literal

import keel
from keel.graph import Graph, GraphWorkflow
from tests.integration._support import wait_until

mode = {"route": "left"}


def make(extra_node: bool, registry: keel.Registry, *, current: bool = True) -> GraphWorkflow:
    """One graph, optionally with one more node (a structural change)."""
    g = Graph("gv.flow")

    @g.route
    def pick(x: int) -> Literal["left", "right"]:
        return "left" if mode["route"] == "left" else "right"

    g.approval("go", after="pick")

    @g.node(after=[("pick", "left"), ("go", "approved")])
    def left(x: int) -> str:
        return f"left {x}"

    @g.node(after=[("pick", "right"), ("go", "approved")])
    def right(x: int) -> str:
        return f"right {x}"

    if extra_node:

        @g.node
        def audit(left: str) -> str:
            return f"audited {left}"

    return g.build(registry=registry, current=current)


async def waiting_for_approval(client: keel.Client, run_id: str) -> None:
    async def reached() -> bool:
        return any(e.type == "signal_awaited" for e in await client.history(run_id))

    await wait_until(reached, f"run {run_id} to wait for its approval", timeout=20)


async def test_a_changed_route_function_does_not_reroute_a_run_in_flight(env: Any) -> None:
    registry = keel.Registry()
    flow = make(False, registry)
    mode["route"] = "left"
    async with env(registry=registry) as (client, _):  # the worker's client has its registry
        run = await client.start(flow, x=1)
        await waiting_for_approval(client, run.run_id)
        mode["route"] = "right"  # a redeploy with another decision: every turn replays
        await client.approve(run.run_id, "go", actor="ana")
        assert await run.result(timeout=20) == {"left": "left 1"}
    mode["route"] = "left"


async def test_a_structural_change_is_a_new_version_and_old_runs_finish_on_theirs(
    env: Any,
) -> None:
    deploy1 = keel.Registry()
    v1 = make(False, deploy1)
    deploy2 = keel.Registry()
    v2 = make(True, deploy2)
    make(False, deploy2, current=False)  # kept to finish the runs started on it
    assert v1.version != v2.version
    async with env(registry=deploy1) as (client, _):
        old = await client.start(v1, x=1)
        await waiting_for_approval(client, old.run_id)
    async with env(registry=deploy2) as (client, _):
        new = await client.start("gv.flow", x=2)  # by name: the current structure
        await waiting_for_approval(client, new.run_id)
        for run in (old, new):
            assert await client.approve(run.run_id, "go", actor="ana")
        assert await client.result(old.run_id, timeout=20) == {"left": "left 1"}
        assert await client.result(new.run_id, timeout=20) == {"audit": "audited left 2"}
        assert (await client.get(old.run_id)).version == v1.version
        assert (await client.get(new.run_id)).version == v2.version


async def test_a_worker_without_the_runs_structure_leaves_it_waiting(env: Any) -> None:
    deploy1 = keel.Registry()
    v1 = make(False, deploy1)
    only_v2 = keel.Registry()
    v2 = make(True, only_v2)
    async with env(registry=deploy1) as (client, _):
        old = await client.start(v1, x=1)
        await waiting_for_approval(client, old.run_id)
    async with env(registry=only_v2) as (worker_client, _):
        client = keel.Client(worker_client.store, registry=deploy1)  # knows v1's approval
        assert await client.approve(old.run_id, "go", actor="ana")

        async def says_why() -> str | None:
            return (await client.get(old.run_id)).waiting

        waiting = await wait_until(says_why, "the run to say why it waits", timeout=20)
        assert waiting == (
            f"no worker has version {v1.version} of gv.flow (live versions: {v2.version})"
        )
        assert (await client.get(old.run_id)).state is keel.RunState.SUSPENDED
