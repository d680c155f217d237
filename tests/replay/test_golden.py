"""Committed journals must replay against the current code."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import keel
from keel.replay import journal_filename, load_journal
from keel.testing import (
    ReplayDiverged,
    assert_golden,
    assert_replays,
    golden_journals,
    replay_golden_folder,
)

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


@pytest.mark.parametrize("path", golden_journals(GOLDEN), ids=lambda p: p.stem)
def test_golden_journal_replays_against_the_current_code(path: Path) -> None:
    assert_golden(path, golden_registry())  # the diff of a divergence, if any


def test_every_golden_journal_replays_as_it_ended() -> None:
    files = golden_journals(GOLDEN)
    assert {f.name for f in files} >= {journal_filename(name) for name in SCENARIOS}
    report = replay_golden_folder(GOLDEN, golden_registry())  # unknown workflows fail too
    outcomes = {Path(v.source).stem: v.outcome for v in report.results}
    assert len(outcomes) == len(files)
    assert outcomes["demo_waiting"] == "suspended"  # a run in flight when recorded
    assert outcomes["graph_waiting"] == "suspended"  # a graph run at its approval
    assert outcomes["golden_saga_cancelled"] == "cancelled"
    finished = set(SCENARIOS) - {"demo_waiting", "graph_waiting", "golden_saga_cancelled"}
    assert {outcomes[n] for n in finished} == {"completed"}


def test_golden_order_journal_replays() -> None:
    journal = load_journal(GOLDEN / "golden_order.json")
    report = assert_replays(golden_order, journal)
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

    with pytest.raises(ReplayDiverged) as info:
        assert_replays(reordered, GOLDEN / "golden_order.json")
    assert info.value.position == 1
    assert "step 'reserve'" in info.value.recorded
    assert "step 'charge'" in info.value.requested


def test_golden_cancelled_saga_journal_replays() -> None:
    journal = load_journal(GOLDEN / "golden_saga_cancelled.json")
    report = assert_replays(golden_saga_cancelled, journal)
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

    with pytest.raises(ReplayDiverged) as info:
        assert_replays(no_saga, GOLDEN / "golden_saga_cancelled.json")
    assert info.value.position == 5
    assert "step 'golden.unbook'" in info.value.recorded
    assert "step 'golden.notify'" in info.value.requested
