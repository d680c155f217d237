"""The node status fold over whole graph runs: the golden graph journals
(recorded by real runs) give each node's status, output and completion order
without running any node."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from keel.graph.status import node_statuses
from tests.replay.graph_app import invoices_wf

GOLDEN = Path(__file__).resolve().parents[1] / "replay" / "golden"


@dataclass(frozen=True)
class Event:
    seq: int
    type: str
    command: str | None
    data: dict[str, Any]
    created_at: datetime


def journal(name: str, upto: int | None = None) -> list[Event]:
    rows = json.loads((GOLDEN / f"{name}.json").read_text())
    at = datetime(2026, 1, 1, tzinfo=UTC)
    events = [Event(r["seq"], r["type"], r["command"], r["data"], at) for r in rows]
    return events if upto is None else events[:upto]


def states(name: str, upto: int | None = None) -> dict[str, str]:
    found = node_statuses(invoices_wf.graph, name, journal(name, upto))
    return {node: s.status for node, s in found.items()}


def test_the_auto_branch() -> None:
    found = node_statuses(invoices_wf.graph, "graph_auto", journal("graph_auto"))
    assert {n: s.status for n, s in found.items()} == {
        "load": "completed",
        "score": "completed",
        "summary": "completed",
        "triage": "completed",
        "sign_off": "skipped",
        "alert_finance": "skipped",  # its condition was false
        "pay": "completed",
        "hold": "skipped",  # pay did not fail
    }
    assert found["score"].output == [20, 40, 60] and found["score"].items == (3, 3)
    assert found["triage"].label == "auto"
    assert found["pay"].output == "paid 120"
    done = sorted((s for s in found.values() if s.ended_seq is not None), key=lambda s: s.ended_seq)
    assert [s.node for s in done][:3] == ["load", "score", "summary"]  # completion order


def test_the_review_branch_with_its_approval() -> None:
    found = node_statuses(
        invoices_wf.graph, "graph_review_approved", journal("graph_review_approved")
    )
    assert found["sign_off"].status == "completed"
    assert found["sign_off"].label == "approved"
    assert found["sign_off"].output["actor"] == "ana"
    assert found["alert_finance"].status == "completed"
    assert found["pay"].status == "completed"


def test_the_error_route() -> None:
    assert states("graph_declined_held") == {
        "load": "completed",
        "score": "completed",
        "summary": "completed",
        "triage": "completed",
        "sign_off": "skipped",
        "alert_finance": "skipped",
        "pay": "failed",
        "hold": "completed",
    }


def test_a_run_in_flight_and_earlier_moments() -> None:
    waiting = states("graph_waiting")
    assert waiting["sign_off"] == "waiting_for_approval"
    assert waiting["pay"] == "pending"  # join any: waits on the approval
    assert waiting["hold"] == "pending"
    assert states("graph_waiting", upto=1) == {  # only run_started
        "load": "running",
        "score": "pending",
        "summary": "pending",
        "triage": "pending",
        "sign_off": "pending",
        "alert_finance": "pending",
        "pay": "pending",
        "hold": "pending",
    }
    partial = node_statuses(invoices_wf.graph, "w", journal("graph_waiting", upto=3))
    assert partial["score"].status == "running" and partial["score"].items == (1, 2)
