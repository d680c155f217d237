"""Declaring and building graphs: binding by parameter name, validation that
collects every problem, the graph as data and its version, drawings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from keel.core.retry import RetryPolicy
from keel.errors import ConfigurationError, GraphDefinitionError
from keel.graph import Graph, GraphWorkflow, NodeError, from_spec
from keel.workflow.registry import Registry


@dataclass
class Invoice:
    id: str
    total: int


def invoices_graph() -> tuple[Graph, dict[str, object]]:
    g = Graph("invoices")

    @g.node(retry=RetryPolicy(max_attempts=5))
    def load(batch_id: str) -> list[Invoice]:
        return []

    def item_key(inv: Invoice) -> str:
        return inv.id

    @g.map("load", key=item_key, max_concurrency=20)
    def score(inv: Invoice) -> int:
        return inv.total

    @g.node
    def summary(score: list[int]) -> int:
        return sum(score)

    @g.route
    def triage(summary: int) -> Literal["auto", "review"]:
        return "auto" if summary < 100 else "review"

    g.approval("sign_off", after=("triage", "review"), timeout=2 * 86400)

    def big(summary: int) -> bool:
        return summary > 10_000

    @g.rule(big)
    def alert_finance(summary: int) -> None:
        return None

    @g.node(
        after=[("triage", "auto"), ("sign_off", "approved")],
        join="any",
        queue="payments",
        on_error="hold",
    )
    def pay(summary: int) -> str:
        return "paid"

    @g.node
    def hold(error: NodeError, summary: int) -> str:
        return "held"

    actions: dict[str, object] = {
        "load": load,
        "score": score,
        "score.key": item_key,
        "summary": summary,
        "triage": triage,
        "alert_finance": alert_finance,
        "alert_finance.condition": big,
        "pay": pay,
        "hold": hold,
    }
    return g, actions


def test_parameters_name_their_sources() -> None:
    g, _ = invoices_graph()
    built = g.build(registry=Registry())
    assert isinstance(built, GraphWorkflow)
    assert built.inputs == ("batch_id",)
    nodes = built.nodes
    assert [(p.name, p.source) for p in nodes["load"].params] == [("batch_id", "input")]
    assert [(p.name, p.source) for p in nodes["score"].params] == [("inv", "item")]
    assert nodes["score"].data_parents == ("load",)
    assert nodes["summary"].data_parents == ("score",)  # fan-in: the map's list
    assert [(p.name, p.source) for p in nodes["hold"].params] == [
        ("error", "error"),
        ("summary", "node"),
    ]
    assert nodes["alert_finance"].data_parents == ("summary",)  # through its condition too
    assert nodes["triage"].labels == ("auto", "review")
    order = list(nodes)
    assert order.index("load") < order.index("score") < order.index("summary")
    assert order.index("pay") < order.index("hold")  # a handler after the node it handles


def test_every_problem_is_reported_with_a_path_and_a_code() -> None:
    g = Graph("bad", inputs=["x"])

    @g.node
    def a(b: int, y: int) -> int:  # y: neither a node nor a declared input
        return b

    @g.node
    def b(a: int) -> int:  # a <-> b: a cycle
        return a

    @g.node(after=("a", "yes"))  # a is no route
    def c(x: int) -> int:
        return x

    @g.route
    def r(x: int) -> Literal["left", "right"]:
        return "left"

    @g.node(after=[("r", "up"), "nowhere"], on_error="missing")
    def d(x: int) -> int:
        return x

    @g.node(on_error="e")
    def d2(x: int) -> int:
        return x

    @g.node
    def e(x: int) -> int:  # handles d2 but takes no error
        return x

    @g.map("x")
    def m() -> int:  # no item parameter
        return 1

    @g.node(name="c")
    def c_again(x: int) -> int:
        return x

    with pytest.raises(GraphDefinitionError) as info:
        g.build(registry=Registry())
    found = {(p.path, p.code) for p in info.value.problems}
    assert {
        ("nodes.a.params.y", "unbound_parameter"),
        ("nodes.c.after[0]", "not_a_branch"),
        ("nodes.d.after[0]", "unknown_label"),
        ("nodes.d.after[1]", "unknown_parent"),
        ("nodes.d.on_error", "unknown_handler"),
        ("nodes.e", "handler_without_error"),
        ("nodes.m", "map_without_item"),
        ("nodes.c", "duplicate_name"),
    } <= found, found
    assert isinstance(info.value, ConfigurationError)
    assert "nodes.a.params.y" in str(info.value)


def test_a_cycle_is_reported_with_its_path() -> None:
    g = Graph("loop")

    @g.node
    def a(c: int) -> int:
        return c

    @g.node
    def b(a: int) -> int:
        return a

    @g.node
    def c(b: int) -> int:
        return b

    with pytest.raises(GraphDefinitionError) as info:
        g.build(registry=Registry())
    [problem] = info.value.problems
    assert problem.code == "cycle"
    assert problem.message == "a cycle: a -> b -> c -> a"


@pytest.mark.parametrize(
    ("options", "path"),
    [
        ({"max_items": 0}, "nodes.m.max_items"),
        ({"tolerate": 1.0}, "nodes.m.tolerate"),
        ({"max_concurrency": 0}, "nodes.m.max_concurrency"),
        ({"join": "most"}, "nodes.m.join"),
        ({"queue": "a#b"}, "nodes.m.queue"),
    ],
)
def test_options_out_of_range_are_refused(options: dict[str, object], path: str) -> None:
    g = Graph("opts")

    @g.node
    def items() -> list[int]:
        return [1]

    @g.map("items", **options)  # type: ignore[arg-type]
    def m(i: int) -> int:
        return i

    with pytest.raises(GraphDefinitionError) as info:
        g.build(registry=Registry())
    assert [(p.path, p.code) for p in info.value.problems] == [(path, "bad_option")]


def test_annotations_the_codec_cannot_handle_are_refused() -> None:
    g = Graph("types")

    @g.node
    def a(x: int) -> object:  # fine
        return x

    class Opaque:  # no way to make one from JSON
        def __init__(self, handle: object) -> None:
            self.handle = handle

    @g.node
    def b(a: int, lock: Opaque) -> int:
        return a

    with pytest.raises(GraphDefinitionError) as info:
        g.build(registry=Registry())
    assert ("nodes.b", "bad_annotation") in {(p.path, p.code) for p in info.value.problems}


def test_no_nodes_and_bad_names() -> None:
    with pytest.raises(GraphDefinitionError) as info:
        Graph("empty").build()
    assert [p.code for p in info.value.problems] == ["no_nodes"]
    g = Graph("names")
    g.approval("a#1")
    with pytest.raises(GraphDefinitionError) as info:
        g.build(registry=Registry())
    assert [(p.path, p.code) for p in info.value.problems] == [("nodes.a#1", "bad_name")]


def test_spec_round_trips_to_the_same_graph_and_version() -> None:
    g, actions = invoices_graph()
    built = g.build(registry=Registry())
    spec = built.to_spec()
    again = from_spec(spec, actions=actions, registry=Registry())  # type: ignore[arg-type]
    assert again.to_spec() == spec
    assert again.version == built.version
    assert list(again.nodes) == list(built.nodes)
    assert again.nodes["pay"].options.queue == "payments"
    assert again.nodes["load"].options.retry == RetryPolicy(max_attempts=5)


def test_from_spec_takes_code_only_from_the_allow_list() -> None:
    g, actions = invoices_graph()
    spec = g.build(registry=Registry()).to_spec()
    partial = {k: v for k, v in actions.items() if k not in ("pay", "score.key")}
    with pytest.raises(GraphDefinitionError) as info:
        from_spec(spec, actions=partial, registry=Registry())  # type: ignore[arg-type]
    assert {(p.path, p.code) for p in info.value.problems} == {
        ("nodes.pay", "unknown_action"),
        ("nodes.score", "unknown_action"),
    }
    swapped = dict(actions, summary=actions["load"])  # takes `batch_id`, not `score`
    with pytest.raises(GraphDefinitionError) as info:
        from_spec(spec, actions=swapped, registry=Registry())  # type: ignore[arg-type]
    assert "spec_mismatch" in {p.code for p in info.value.problems}


def test_the_version_follows_structure_not_bodies() -> None:
    def make(body_result: int, extra_edge: bool) -> str:
        g = Graph("v")

        @g.node
        def a() -> int:
            return body_result

        @g.node(after=["a"] if extra_edge else [])
        def b() -> int:
            return 2

        return str(g.build(registry=Registry()).version)

    assert make(1, False) == make(99, False)  # a body changed: same version
    assert make(1, False) != make(1, True)  # an edge added: a new version
    assert len(make(1, False)) == 16


def test_mermaid_and_dot_drawings() -> None:
    g = Graph("draw")

    @g.node
    def load(n: int) -> list[int]:
        return list(range(n))

    @g.map("load")
    def double(i: int) -> int:
        return 2 * i

    @g.route
    def pick(double: list[int]) -> Literal["small", "big"]:
        return "small"

    @g.node(after=("pick", "big"), on_error="fallback")
    def report(double: list[int]) -> str:
        return "r"

    @g.node
    def fallback(error: NodeError) -> str:
        return 'say "hi"'

    built = g.build(registry=Registry())
    assert built.to_mermaid() == (
        "flowchart TD\n"
        '    n0["load"]\n'
        '    n1[["double (map)"]]\n'
        '    n2{"pick (route)"}\n'
        '    n3["report"]\n'
        '    n4["fallback"]\n'
        "    n0 --> n1\n"
        "    n1 --> n2\n"
        "    n1 --> n3\n"
        '    n2 -- "big" --> n3\n'
        '    n3 -. "on error" .-> n4\n'
    )
    assert built.to_dot() == (
        'digraph "draw" {\n'
        "    rankdir=TB;\n"
        '    "load" [shape=box, label="load"];\n'
        '    "double" [shape=box3d, label="double (map)"];\n'
        '    "pick" [shape=diamond, label="pick (route)"];\n'
        '    "report" [shape=box, label="report"];\n'
        '    "fallback" [shape=box, label="fallback"];\n'
        '    "load" -> "double";\n'
        '    "double" -> "pick";\n'
        '    "double" -> "report";\n'
        '    "pick" -> "report" [label="big"];\n'
        '    "report" -> "fallback" [style=dashed, label="on error"];\n'
        "}\n"
    )


def test_fan_in_of_a_node_that_is_no_map_is_refused() -> None:
    g = Graph("fanin")

    @g.node
    def one() -> int:
        return 1

    @g.node
    def many() -> list[int]:
        return [1]

    @g.map("many")
    def each(i: int) -> int:
        return i

    @g.node
    def bad(one: list[int]) -> int:  # `one` yields an int, not a list
        return 0

    @g.node
    def fine(many: list[int], each: list[int]) -> int:
        return 0

    with pytest.raises(GraphDefinitionError) as info:
        g.build(registry=Registry())
    assert [(p.path, p.code) for p in info.value.problems] == [
        ("nodes.bad.params.one", "fan_in_of_non_map")
    ]


def test_a_cache_ttl_is_an_option_of_the_spec_and_round_trips() -> None:
    from datetime import timedelta

    def make(**cache: object) -> GraphWorkflow:
        g = Graph("ttl")

        @g.node(**cache)  # type: ignore[call-overload]
        def a(x: int) -> int:
            return x

        return g.build(registry=Registry())

    plain, cached = make(), make(cache=True)
    in_seconds, as_delta = make(cache=True, ttl=60), make(cache=True, ttl=timedelta(minutes=1))
    # Left out of the spec when unset: graphs without a TTL keep their version.
    assert "ttl" not in cached.to_spec()["nodes"][0]["options"]
    assert in_seconds.to_spec()["nodes"][0]["options"] == {"cache": True, "ttl": 60.0}
    assert in_seconds.version == as_delta.version != cached.version != plain.version
    again = from_spec(
        in_seconds.to_spec(), actions={"a": in_seconds.nodes["a"].fn}, registry=Registry()
    )  # type: ignore[dict-item]
    assert again.version == in_seconds.version and again.nodes["a"].options.ttl == 60.0
    assert again.steps["a"].body is not None and again.steps["a"].body.key_max_age == 60.0
