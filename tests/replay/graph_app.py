"""The graph of the golden graph journals: a map with keys and a cap, a fan-in,
a route, a rule, an approval and an error route. Changing its structure makes
a new version (so the journals would need the old structure kept as a
non-current version); changing a node body must keep them replaying."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import keel
from keel.graph import Graph, NodeError

FAST = keel.RetryPolicy(max_attempts=2, initial_interval=0.01, max_interval=0.02, jitter=0.0)


@dataclass
class Invoice:
    id: str
    total: int


invoices = Graph("golden.invoices")


@invoices.node
def load(batch: list[Invoice]) -> list[Invoice]:
    return batch


def invoice_id(inv: Invoice) -> str:
    return inv.id


@invoices.map("load", key=invoice_id, max_concurrency=2)
def score(inv: Invoice) -> int:
    return inv.total * 2


@invoices.node
def summary(score: list[int]) -> int:
    return sum(score)


@invoices.route
def triage(summary: int) -> Literal["auto", "review"]:
    return "auto" if summary < 1000 else "review"


invoices.approval("sign_off", after=("triage", "review"), timeout=3600)


def over_limit(summary: int) -> bool:
    return summary > 5000


@invoices.rule(over_limit)
def alert_finance(summary: int) -> str:
    return f"alert: {summary}"


@invoices.node(
    after=[("triage", "auto"), ("sign_off", "approved")], join="any", on_error="hold", retry=FAST
)
def pay(summary: int) -> str:
    if summary % 7 == 0:
        raise RuntimeError(f"payment of {summary} declined")
    return f"paid {summary}"


@invoices.node
def hold(error: NodeError, summary: int) -> str:
    return f"held {summary}: {error.message}"


invoices_wf = invoices.build()
