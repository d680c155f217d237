"""Committed journals must replay against the current code."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import keel
from keel.testing.replay import check_files, check_replay, journal_filename, load_journal

from .golden_app import Order, Shipment, charge, golden_order, label, reserve
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
    assert {outcomes[n] for n in SCENARIOS if n != "demo_waiting"} == {"completed"}


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
