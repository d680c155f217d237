"""Committed journals must replay against the current code."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import keel
from keel.replay import check_files, check_replay, journal_filename, load_journal

from .golden_app import (
    Order,
    Shipment,
    book,
    charge,
    golden_order,
    golden_saga_cancelled,
    label,
    notify,
    reserve,
)
from .record_golden import SCENARIOS, golden_registry

GOLDEN = Path(__file__).parent / "golden"


def test_every_golden_journal_replays_against_the_current_code() -> None:
    files = sorted(GOLDEN.glob("*.json"))
    assert {f.name for f in files} >= {journal_filename(name) for name in SCENARIOS}
    report = check_files([GOLDEN], golden_registry())
    report.assert_passed(strict=True)  # a journal of an unknown workflow fails too
    outcomes = {Path(v.source).stem: v.outcome for v in report.results}
    assert len(outcomes) == len(files)
    assert outcomes["demo_waiting"] == "suspended"  # a run in flight when recorded
    assert outcomes["graph_waiting"] == "suspended"  # a graph run at its approval
    assert outcomes["golden_saga_cancelled"] == "cancelled"
    finished = set(SCENARIOS) - {"demo_waiting", "graph_waiting", "golden_saga_cancelled"}
    assert {outcomes[n] for n in finished} == {"completed"}


def test_golden_order_journal_replays() -> None:
    journal = load_journal(GOLDEN / "golden_order.json")
    report = check_replay(golden_order, journal)
    assert report.status == "completed"
    assert isinstance(report.result, Shipment)
    assert report.result.approved_by == "ana"
    types = [e.type.value for e in journal]
    assert types.count("step_attempt_failed") == 1  # the recorded retry replays too


def test_golden_journal_catches_reordered_steps() -> None:
    registry = keel.Registry()

    @keel.workflow(name="golden_order", registry=registry)
    async def reordered(order: Order) -> None:
        await charge(order.order_id, order.amount)  # charge before reserve
        reserved = await reserve(order)
        await asyncio.gather(*(label(order.order_id, r) for r in reserved))

    with pytest.raises(keel.NondeterminismError) as info:
        check_replay(reordered, load_journal(GOLDEN / "golden_order.json"))
    assert info.value.position == 1
    assert "step 'reserve'" in info.value.recorded
    assert "step 'charge'" in info.value.requested


def test_golden_cancelled_saga_journal_replays() -> None:
    journal = load_journal(GOLDEN / "golden_saga_cancelled.json")
    report = check_replay(golden_saga_cancelled, journal)
    assert report.status == "cancelled"
    assert [e.command for e in journal if e.type.value == "step_completed"][2:] == [
        "step:golden.unbook#0",
        "step:golden.unbook#1",
        "step:golden.notify#0",
    ]


def test_golden_saga_journal_catches_compensations_removed() -> None:
    registry = keel.Registry()

    @keel.workflow(name="golden_saga_cancelled", registry=registry)
    async def no_saga(trip: str) -> str:
        try:
            await book(f"{trip}-hotel")
            await book(f"{trip}-flight")
            await keel.wait_for_signal("confirm")
        except keel.WorkflowCancelled:
            await notify(f"{trip} cancelled")
            raise
        return "confirmed"

    with pytest.raises(keel.NondeterminismError) as info:
        check_replay(no_saga, load_journal(GOLDEN / "golden_saga_cancelled.json"))
    assert info.value.position == 5
    assert "step 'golden.unbook'" in info.value.recorded
    assert "step 'golden.notify'" in info.value.requested
