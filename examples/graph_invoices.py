"""A graph workflow: load a batch, score each invoice (fan-out), sum the scores
(fan-in), route large batches to a human approval, alert finance by rule, pay
(or hold the payment if paying fails after its retries).

    python examples/graph_invoices.py
"""

import asyncio
from dataclasses import dataclass
from typing import Literal

import keel
from keel.graph import Graph, NodeError


@dataclass
class Invoice:
    id: str
    total: int


g = Graph("invoices")


@g.node(retry=keel.RetryPolicy(max_attempts=5, initial_interval=0.2))
def load(batch_id: str) -> list[Invoice]:  # `batch_id` names no node: a graph input
    return [Invoice(f"{batch_id}-{i}", 4000 * i) for i in range(1, 4)]


def invoice_id(inv: Invoice) -> str:
    return inv.id


@g.map("load", key=invoice_id, max_concurrency=20)
def score(inv: Invoice) -> int:  # once per item of load's list
    return inv.total


@g.node
def summary(score: list[int]) -> int:  # `score` names the map: its results, in item order
    return sum(score)


@g.route
def triage(summary: int) -> Literal["auto", "review"]:  # decided once, journaled
    return "auto" if summary < 10_000 else "review"


g.approval("sign_off", after=("triage", "review"), timeout=2 * 86400)


def over_limit(summary: int) -> bool:
    return summary > 20_000


@g.rule(over_limit)  # runs only when the condition holds; otherwise skipped
def alert_finance(summary: int) -> str:
    return f"finance alerted: {summary}"


@g.node(after=[("triage", "auto"), ("sign_off", "approved")], join="any", on_error="hold")
def pay(summary: int) -> str:
    return f"paid {summary}"


@g.node  # pay's error route: its result stands in for pay's
def hold(error: NodeError, summary: int) -> str:
    return f"held {summary}: {error.message}"


invoices = g.build()  # validate, version (a digest of the structure), register


async def main() -> None:
    async with keel.Worker("sqlite:///invoices.db") as worker:
        client = worker.client()
        run = await client.start(invoices, batch_id="b-42", run_id="batch-b-42")
        await client.approve(run.run_id, "sign_off", actor="ana", comment="checked")
        print(await run.result(timeout=30))


if __name__ == "__main__":
    asyncio.run(main())
