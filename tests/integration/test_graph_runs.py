"""Graph runs end to end, in-process, on every backend, every turn replayed
(the env fixture's worker keeps no cache): dataflow, joins, routes, rules,
error routes, maps, approvals."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any, Literal

import pytest

import keel
from keel import RetryPolicy
from keel.graph import Graph, NodeError
from tests.integration._support import wait_until

FAST = RetryPolicy(max_attempts=2, initial_interval=0.01, max_interval=0.02, jitter=0.0)
calls: Counter[str] = Counter()
_lock = threading.Lock()


def count(name: str) -> None:
    with _lock:
        calls[name] += 1


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()


# --- dataflow: map, fan-in, join of two branches ---------------------------------------

flow = Graph("gt.flow")


@flow.node
def numbers(n: int) -> list[int]:
    return list(range(1, n + 1))


@flow.map("numbers", max_concurrency=2)
def doubled(item: int) -> int:
    count(f"double:{item}")
    return 2 * item


@flow.node
def total(doubled: list[int]) -> int:
    return sum(doubled)


flow_wf = flow.build()


async def test_a_map_then_a_reduce(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(flow_wf, n=3)
        assert await run.result(timeout=20) == {"total": 12}
        assert calls == {"double:1": 1, "double:2": 1, "double:3": 1}  # each item once
        history = await client.history(run.run_id)
        steps = [e.command for e in history if e.type == "step_completed"]
        assert steps == [
            "step:gt.flow.numbers#0",
            "step:gt.flow.doubled#0",
            "step:gt.flow.doubled#1",
            "step:gt.flow.doubled#2",
            "step:gt.flow.total#0",
        ]


async def test_client_nodes_show_each_nodes_input(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(flow_wf, n=2)
        assert await run.result(timeout=20) == {"total": 6}
        nodes = await client.nodes(run.run_id)
    assert nodes["numbers"].input == {"n": 2}
    assert nodes["doubled"].input == [{"item": 1}, {"item": 2}]  # one per item
    assert nodes["total"].input == {"doubled": [2, 4]}
    assert all(n.input_size is None for n in nodes.values())


async def test_an_empty_map_completes_with_an_empty_list(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(flow_wf, n=0)
        assert await run.result(timeout=20) == {"total": 0}


join = Graph("gt.join")


@join.node
def left(x: int) -> int:
    return x + 1


@join.node
def right(x: int) -> int:
    return x * 2


@join.node
def joined(left: int, right: int) -> int:
    return left + right


join_wf = join.build()


async def test_a_join_of_two_branches(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(join_wf, x=5)
        assert await run.result(timeout=20) == {"joined": 16}


# --- routes, rules, failures -------------------------------------------------------------

routes = Graph("gt.routes")


@routes.route
def size(amount: int) -> Literal["small", "large"]:
    return "small" if amount < 100 else "large"


@routes.node(after=("size", "small"))
def auto(amount: int) -> str:
    count("auto")
    return f"auto {amount}"


@routes.node(after=("size", "large"))
def manual(amount: int) -> str:
    count("manual")
    return f"manual {amount}"


def is_big(amount: int) -> bool:
    return amount > 1000


@routes.rule(is_big)
def alert(amount: int) -> str:
    count("alert")
    return "alerted"


@routes.node(after=["auto", "manual"], join="any")
def done(amount: int) -> str:
    return "done"


routes_wf = routes.build()


async def test_a_route_takes_one_branch_and_only_the_matching_rule_fires(env: Any) -> None:
    async with env() as (client, _):
        small = await client.start(routes_wf, amount=5)
        assert await small.result(timeout=20) == {"done": "done"}  # auto: a sink of nothing
        assert calls == {"auto": 1}
        big = await client.start(routes_wf, amount=5000)
        assert await big.result(timeout=20) == {"alert": "alerted", "done": "done"}
        assert calls == {"auto": 1, "manual": 1, "alert": 1}


failing = Graph("gt.failing")


@failing.node(retry=FAST)
def broken(x: int) -> int:
    count("broken")
    raise RuntimeError("no luck")


@failing.node
def after_broken(broken: int) -> int:
    count("after_broken")
    return broken


@failing.node
def independent(x: int) -> int:
    count("independent")
    return x


failing_wf = failing.build()


async def test_a_failure_blocks_downstream_and_the_run_still_ends(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(failing_wf, x=1)
        with pytest.raises(keel.RunFailedError) as info:
            await run.result(timeout=20)
        assert info.value.error_type == "keel.errors.NodeFailedError"
        assert "node 'broken' failed after 2 attempt(s)" in str(info.value)
        assert "blocked: after_broken" in str(info.value)
        assert calls == {"broken": 2, "independent": 1}  # the other branch finished


handled = Graph("gt.handled")


@handled.node(retry=FAST, on_error="fallback")
def charge(amount: int) -> str:
    count("charge")
    raise RuntimeError("card declined")


@handled.node
def fallback(error: NodeError, amount: int) -> str:
    return f"held {amount}: {error.error_type}: {error.message} after {error.attempts}"


@handled.node
def receipt(charge: str) -> str:
    return f"receipt({charge})"


@handled.node(retry=FAST, on_error="skip")
def optional(amount: int) -> int:
    raise RuntimeError("optional failed")


@handled.node
def uses_optional(optional: int) -> int:
    count("uses_optional")
    return optional


handled_wf = handled.build()


async def test_error_routes_stand_in_for_the_failed_node_or_skip(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(handled_wf, amount=7)
        result = await run.result(timeout=20)
        assert result == {
            "receipt": "receipt(held 7: builtins.RuntimeError: card declined after 2)",
        }
        assert calls == {"charge": 2}  # uses_optional skipped


# --- approvals -----------------------------------------------------------------------------

review = Graph("gt.review")


@review.node
def draft(doc: str) -> str:
    return doc.upper()


review.approval("sign_off", after="draft", timeout=3600)


@review.node(after=("sign_off", "approved"))
def publish(draft: str, sign_off: dict[str, Any]) -> str:
    return f"published {draft} by {sign_off['actor']}"


@review.node(after=("sign_off", "rejected"))
def archive(draft: str) -> str:
    return f"archived {draft}"


review_wf = review.build()


async def wait_for_state(client: keel.Client, run_id: str, node: str) -> None:
    async def reached() -> bool:
        history = await client.history(run_id)
        return any(e.command and e.command.endswith(f"{node}#0") for e in history)

    await wait_until(reached, f"node {node} of run {run_id}", timeout=20)


@pytest.mark.parametrize("decision", ["approved", "rejected"])
async def test_an_approval_follows_the_decision_and_records_the_actor(
    env: Any, decision: str
) -> None:
    async with env() as (client, _):
        run = await client.start(review_wf, doc="memo")
        await wait_for_state(client, run.run_id, "draft")
        if decision == "approved":
            assert await client.approve(run.run_id, "sign_off", actor="ana", comment="ok")
            assert not await client.approve(run.run_id, "sign_off", actor="bob")  # a no-op
            assert await run.result(timeout=20) == {"publish": "published MEMO by ana"}
        else:
            assert await client.reject(run.run_id, "sign_off", actor="ana", comment="no")
            assert await run.result(timeout=20) == {"archive": "archived MEMO"}


async def test_an_approval_sent_early_is_not_lost(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(review_wf, doc="memo", run_id="early")
        assert await client.approve("early", "sign_off", actor="ana")
        assert await run.result(timeout=20) == {"publish": "published MEMO by ana"}


async def test_an_approval_for_a_node_that_cannot_wait_is_refused(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(review_wf, doc="memo")
        with pytest.raises(keel.ConfigurationError, match="no approval node 'draft'"):
            await client.approve(run.run_id, "draft", actor="ana")
        with pytest.raises(keel.ConfigurationError, match="no approval node 'nope'"):
            await client.reject(run.run_id, "nope", actor="ana")
        flow_run = await client.start(flow_wf, n=1)
        with pytest.raises(keel.ConfigurationError, match="no approval node"):
            await client.approve(flow_run.run_id, "sign_off", actor="ana")
        assert await run.info() is not None


# --- maps: concurrency cap, tolerated failures, limits, keys -----------------------------

in_flight = {"now": 0, "max": 0}
gate = threading.Condition()

capped = Graph("gt.capped")


@capped.map("items", max_concurrency=3)
def slow(item: int) -> int:
    with gate:
        in_flight["now"] += 1
        in_flight["max"] = max(in_flight["max"], in_flight["now"])
    try:
        # Hold the slot until a later item could have started, were the cap not kept.
        with gate:
            gate.wait_for(lambda: in_flight["now"] >= 3 or item >= 9, timeout=0.2)
        return item
    finally:
        with gate:
            in_flight["now"] -= 1
            gate.notify_all()


capped_wf = capped.build()


async def test_the_engine_keeps_a_maps_concurrency_cap(env: Any) -> None:
    in_flight.update(now=0, max=0)
    async with env(concurrency=50, step_threads=32) as (client, _):
        run = await client.start(capped_wf, items=list(range(12)))
        assert await run.result(timeout=30) == {"slow": list(range(12))}  # item order
    assert in_flight["max"] == 3


tolerant = Graph("gt.tolerant")


def by_name(item: str) -> str:
    return item


@tolerant.map("names", key=by_name, tolerate=0.34, retry=FAST)
def greet(name: str) -> str:
    if name.startswith("bad"):
        raise ValueError(f"cannot greet {name}")
    return f"hi {name}"


tolerant_wf = tolerant.build()


async def test_a_map_tolerates_its_fraction_of_failures_and_no_more(env: Any) -> None:
    async with env() as (client, _):
        ok = await client.start(tolerant_wf, names=["ann", "bad1", "cy"])
        assert await ok.result(timeout=20) == {"greet": ["hi ann", None, "hi cy"]}
        too_many = await client.start(tolerant_wf, names=["ann", "bad1", "bad2"])
        with pytest.raises(keel.RunFailedError, match=r"2 of 3 items failed \(tolerated: 1\)"):
            await too_many.result(timeout=20)
        with pytest.raises(keel.RunFailedError, match="item 'bad1'"):
            await too_many.result(timeout=20)
        dupes = await client.start(tolerant_wf, names=["ann", "ann"])
        with pytest.raises(keel.RunFailedError, match="two items have the key 'ann'"):
            await dupes.result(timeout=20)


limited = Graph("gt.limited")


@limited.map("items", max_items=5)
def echo(item: int) -> int:
    count("echo")
    return item


limited_wf = limited.build()


async def test_a_map_over_too_many_items_fails_loudly_without_running_any(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(limited_wf, items=list(range(6)))
        with pytest.raises(keel.RunFailedError, match="got 6 items, more than max_items=5"):
            await run.result(timeout=20)
    assert calls["echo"] == 0


# --- route labels, approval timeouts ----------------------------------------------------

unlabelled = Graph("gt.unlabelled")


@unlabelled.route(labels=["a", "b", "c"])
def choose(pick: str) -> str:
    return pick


@unlabelled.node(after=("choose", "a"))
def on_a() -> str:
    return "a"


@unlabelled.node(after=("choose", "b"))
def on_b() -> str:
    return "b"


unlabelled_wf = unlabelled.build()


async def test_a_label_no_edge_follows_fails_the_route_clearly(env: Any) -> None:
    async with env() as (client, _):
        for pick in ("c", "zzz"):
            run = await client.start(unlabelled_wf, pick=pick)
            with pytest.raises(keel.RunFailedError) as info:
                await run.result(timeout=20)
            assert f"route 'choose' chose '{pick}', which no edge follows (edges: a, b)" in str(
                info.value
            )


timed = Graph("gt.timed")
timed.approval("ok", timeout=0.2)


@timed.node(after=("ok", "timeout"))
def escalate(ok: dict[str, Any]) -> str:
    return f"escalated after {ok['decision']}"


timed_wf = timed.build()


async def test_an_approval_that_times_out_follows_its_timeout_edge(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(timed_wf)
        assert await run.result(timeout=20) == {"escalate": "escalated after timeout"}


# --- children both ways, queued nodes ----------------------------------------------------


@keel.workflow(name="gt.code_child")
async def code_child(x: int) -> int:
    return x * 10


with_child = Graph("gt.with_child")


@with_child.node
def base(x: int) -> int:
    return x + 1


with_child.child("scaled", code_child, after="base")


@with_child.node
def report(scaled: int, base: int) -> str:
    return f"{base} -> {scaled}"


with_child_wf = with_child.build()


@keel.workflow(name="gt.code_parent")
async def code_parent(x: int) -> dict[str, Any]:
    return await keel.run_child(with_child_wf, x=x)


async def test_graphs_and_code_workflows_run_each_other_as_children(env: Any) -> None:
    async with env() as (client, _):
        run = await client.start(code_parent, 4)
        assert await run.result(timeout=20) == {"report": "5 -> 40"}  # base = x + 1
        [graph_run] = (await client.list(workflow="gt.with_child")).runs
        assert graph_run.parent_run_id == run.run_id
        [child] = (await client.list(workflow="gt.code_child")).runs
        assert child.parent_run_id == graph_run.run_id


queued = Graph("gt.queued")


@queued.node(queue="gt-payments")
def pay(amount: int) -> str:
    count("pay")
    return f"paid {amount}"


queued_wf = queued.build()


async def test_a_queued_node_runs_on_a_worker_serving_its_queue(env: Any) -> None:
    async with env(queues=["gt-payments"]) as (client, _):
        run = await client.start(queued_wf, amount=3)
        assert await run.result(timeout=20) == {"pay": "paid 3"}
        history = await client.history(run.run_id)
        assert "step_dispatched" in [e.type for e in history]
    assert calls == {"pay": 1}


async def test_bad_graph_input_is_refused_before_anything_is_written(env: Any) -> None:
    async with env() as (client, _):
        with pytest.raises(keel.InvalidInputError):
            await client.start(flow_wf, n="three")
        with pytest.raises(TypeError):
            await client.start(flow_wf, 3)  # inputs are keywords
        with pytest.raises(TypeError):
            await client.start(flow_wf)  # n is required
        assert await client.count() == 0
