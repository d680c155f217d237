"""Graphs for the crash scenarios: a map of many items with one gated item,
and an approval wait. Step bodies log every execution (see _record.py), each
map item with its index."""

from __future__ import annotations

from typing import Any

from keel.graph import Graph
from tests.acceptance.apps._record import record, wait_gate

fan = Graph("accg.fan")


@fan.node
def items(n: int) -> list[int]:
    record()
    return list(range(n))


@fan.map("items", max_concurrency=10)
def square(item: int, gate: str, gated: int) -> int:
    record(f"i{item}")
    if item == gated:
        wait_gate(gate)  # the test kills the worker while this item is in flight
    return item * item


@fan.node
def total(square: list[int]) -> int:
    record()
    return sum(square)


fan_wf = fan.build()


review = Graph("accg.review")


@review.node
def prepare(doc: str) -> str:
    record()
    return doc.upper()


review.approval("sign_off", after="prepare")


@review.node(after=("sign_off", "approved"))
def publish(prepare: str, sign_off: dict[str, Any]) -> str:
    record()
    return f"{prepare} approved by {sign_off['actor']}"


@review.node(after=("sign_off", "rejected"))
def shelve(prepare: str) -> str:
    record()
    return f"{prepare} shelved"


review_wf = review.build()
