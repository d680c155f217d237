"""The join truth tables: what a node does given its parents' outcomes.

Data parents are always all required; ``join`` governs ``after=`` edges. The
expected tables are written out here by hand, independently of the code."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from keel.graph import Graph
from keel.graph.engine import GraphRun, Outcome
from keel.graph.validate import build

# A parent's outcome as the node sees it: P pending, C completed, S skipped, F failed.
OUTCOMES = {
    "C": Outcome("completed", 1),
    "S": Outcome("skipped"),
    "F": Outcome("failed"),
}

# (a, b) -> verdict; None: still waiting.
ALL = {
    ("P", "P"): None, ("P", "C"): None, ("P", "S"): None, ("P", "F"): None,
    ("C", "P"): None, ("C", "C"): "run", ("C", "S"): "skip", ("C", "F"): "block",
    ("S", "P"): None, ("S", "C"): "skip", ("S", "S"): "skip", ("S", "F"): "block",
    ("F", "P"): None, ("F", "C"): "block", ("F", "S"): "block", ("F", "F"): "block",
}  # fmt: skip
ANY = {
    ("P", "P"): None, ("P", "C"): "run", ("P", "S"): None, ("P", "F"): None,
    ("C", "P"): "run", ("C", "C"): "run", ("C", "S"): "run", ("C", "F"): "run",
    ("S", "P"): None, ("S", "C"): "run", ("S", "S"): "skip", ("S", "F"): "block",
    ("F", "P"): None, ("F", "C"): "run", ("F", "S"): "block", ("F", "F"): "block",
}  # fmt: skip


def graph(join: str, by_data: bool = False) -> Any:
    g = Graph(f"joins-{join}-{by_data}")

    @g.node
    def a() -> int:
        return 1

    @g.node
    def b() -> int:
        return 1

    if by_data:

        @g.node
        def x(a: int, b: int) -> int:
            return a + b

    else:

        @g.node(after=["a", "b"], join=join)  # type: ignore[arg-type]
        def x() -> int:
            return 0

    return build(g)


def verdict(built: Any, a: str, b: str) -> str | None:
    run = GraphRun(built, {}, {})
    for name, state in (("a", a), ("b", b)):
        if state != "P":
            run.outcomes[name] = OUTCOMES[state]
    return run._verdict(built.nodes["x"])


@pytest.mark.parametrize("join", ["all", "any"])
def test_after_edges_follow_the_join_table(join: str) -> None:
    built = graph(join)
    table = ALL if join == "all" else ANY
    for a, b in itertools.product("PCSF", repeat=2):
        assert verdict(built, a, b) == table[(a, b)], (join, a, b)


def test_data_parents_are_always_all_required() -> None:
    built = graph("any", by_data=True)
    for a, b in itertools.product("PCSF", repeat=2):
        assert verdict(built, a, b) == ALL[(a, b)], (a, b)


def test_labels_choose_the_branch() -> None:
    g = Graph("labels")

    @g.route(labels=["yes", "no"])
    def r() -> str:
        return "yes"

    @g.node(after=("r", "yes"))
    def on_yes() -> int:
        return 1

    @g.node(after=("r", "no"))
    def on_no() -> int:
        return 0

    built = build(g)
    run = GraphRun(built, {}, {})
    run.outcomes["r"] = Outcome("completed", "yes", label="yes")
    assert run._verdict(built.nodes["on_yes"]) == "run"
    assert run._verdict(built.nodes["on_no"]) == "skip"


def test_a_failed_node_counts_as_its_error_route_says() -> None:
    g = Graph("routes")

    @g.node(on_error="handler")
    def handled() -> int:
        return 1

    @g.node
    def handler(error: Any) -> int:
        return 2

    @g.node(on_error="skip")
    def skipping() -> int:
        return 1

    @g.node
    def plain() -> int:
        return 1

    built = build(g)
    run = GraphRun(built, {}, {})
    for name in ("handled", "skipping", "plain"):
        run.outcomes[name] = Outcome("failed")
    assert run.effective("skipping") == Outcome("skipped")
    assert run.effective("plain") == Outcome("blocked")
    assert run.effective("handled") is None  # its handler has not run yet
    assert run._verdict(built.nodes["handler"]) == "run"
    run.outcomes["handler"] = Outcome("completed", 2)
    assert run.effective("handled") == Outcome("completed", 2)
    run.outcomes["handled"] = Outcome("completed", 1)  # had it succeeded instead:
    assert run._verdict(built.nodes["handler"]) == "skip"
