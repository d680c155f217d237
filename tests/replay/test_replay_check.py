"""The replay checker's helper over journals and exported files (runs recorded in memory)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import keel
from keel.core.events import EventType
from keel.core.journal import JournalEntry
from keel.replay import (
    JournalVerdict,
    ReplayCheckReport,
    check_files,
    check_journal,
    export_runs,
    journal_filename,
    journal_files,
    load_journal,
)
from keel.store.memory import MemoryStore

from .shop import define, define_other, record, recording


def code(variant: str, *, other: bool = False) -> keel.Registry:
    """The registry a deploy of ``variant`` would run."""
    registry = keel.Registry()
    define(variant, registry)
    if other:
        define_other(registry)
    return registry


async def recorded(tmp_path: Path, **counts: int) -> tuple[dict[str, list[str]], Path]:
    """v1 runs recorded on a memory store and exported to ``tmp_path/journals``."""
    async with recording(MemoryStore()) as client:
        ids = await record(client, **counts)
        await export_runs(client, tmp_path / "journals")
    return ids, tmp_path / "journals"


def by_run(report: ReplayCheckReport) -> dict[str, JournalVerdict]:
    return {v.run_id: v for v in report.results}


async def test_unchanged_code_replays_finished_and_in_flight_runs(tmp_path: Path) -> None:
    ids, journals = await recorded(tmp_path, done=2, in_flight=1)
    report = check_files([journals], code("v1"))
    assert report.passed(strict=True), report.summary()
    verdicts = by_run(report)
    assert set(verdicts) == set(ids["done"] + ids["in_flight"])
    assert {verdicts[r].outcome for r in ids["done"]} == {"completed"}
    assert verdicts[ids["in_flight"][0]].outcome == "suspended"
    assert report.summary() == "3 journals checked: 3 replay, 0 diverged, 0 skipped"


@pytest.mark.parametrize(
    ("variant", "recorded_part", "requested_part"),
    [
        ("reordered", "step_completed of step 'rc_reserve' (#0)", "step 'rc_charge' (#0)"),
        ("renamed", "step_completed of step 'rc_reserve' (#0)", "step 'rc_hold' (#0)"),
        ("changed_args", "step 'rc_reserve' (#0) with arguments hash", "different arguments"),
    ],
)
async def test_a_code_change_is_reported_with_position_and_difference(
    tmp_path: Path, variant: str, recorded_part: str, requested_part: str
) -> None:
    _, journals = await recorded(tmp_path, done=2, in_flight=1)
    report = check_files([journals], code(variant))
    assert not report.passed()
    assert len(report.diverged) == 3  # finished and in-flight runs alike
    for verdict in report.diverged:
        assert verdict.position == 1  # seq 0 is run_started; the first step is at 1
        assert verdict.recorded is not None and recorded_part in verdict.recorded
        assert verdict.requested is not None and requested_part in verdict.requested
        assert verdict.source.endswith(journal_filename(verdict.run_id))
        assert f"run {verdict.run_id!r} at journal position 1" in verdict.message
    with pytest.raises(AssertionError, match="3 diverged"):
        report.assert_passed()


def _family(child_input: str) -> tuple[keel.Registry, keel.WorkflowDef[..., str]]:
    """A parent that runs one child with ``child_input``, in a registry of its own."""
    registry = keel.Registry()

    @keel.step(name="rc_pack", registry=registry)
    async def pack(item: str) -> str:
        return f"packed {item}"

    @keel.workflow(name="rc_child", version="1", registry=registry)
    async def child(item: str) -> str:
        return str(await pack(item))

    @keel.workflow(name="rc_parent", version="1", registry=registry)
    async def parent(order: str) -> str:
        packed = await keel.run_child(child, child_input)
        return f"{order}: {packed}"

    return registry, parent


async def test_a_changed_child_input_is_reported() -> None:
    registry, parent = _family("lamp")
    store = MemoryStore()
    async with keel.Worker(store, registry=registry, cache=False, poll_interval=0.02) as worker:
        run = await worker.client().start(parent, "o-1")
        assert await run.result(timeout=10) == "o-1: packed lamp"
        records = await store.reads.history(run.run_id)
    journal = [JournalEntry(r.seq, EventType(r.type), r.command, r.data) for r in records]
    child_started = next(e for e in journal if e.type is EventType.CHILD_STARTED)

    same = check_journal(journal, _family("lamp")[0], run_id=run.run_id)
    assert same.status == "ok", same
    changed = check_journal(journal, _family("desk")[0], run_id=run.run_id)
    assert changed.status == "diverged"
    assert changed.position == child_started.seq
    assert changed.recorded is not None and "child 'rc_child'" in changed.recorded
    assert changed.requested is not None and "different arguments" in changed.requested


async def test_an_unregistered_workflow_is_skipped_not_failed(tmp_path: Path) -> None:
    ids, journals = await recorded(tmp_path, done=1, in_flight=0, other=2)
    report = check_files([journals], code("v1"))
    skipped = {v.run_id: v for v in report.skipped}
    assert set(skipped) == set(ids["other"])
    for verdict in skipped.values():
        assert verdict.workflow == "rc_other"
        assert "workflow 'rc_other' is not registered (registered: rc_shop)" in verdict.message
    assert [v.run_id for v in report.ok] == ids["done"]
    assert report.passed()
    assert not report.passed(strict=True)
    with pytest.raises(AssertionError, match="not registered"):
        report.assert_passed(strict=True)


async def test_a_changed_result_is_reported_at_the_run_completed_event(tmp_path: Path) -> None:
    _, journals = await recorded(tmp_path, done=1, in_flight=0)
    steps = code("v1")
    reserve, charge = steps.get_step("rc_reserve"), steps.get_step("rc_charge")
    registry = keel.Registry()

    @keel.workflow(name="rc_shop", registry=registry)
    async def shop(sku: str, amount: int, wait: bool = False) -> str:
        await reserve(sku)
        await charge(amount)
        return "something else"

    (verdict,) = check_files([journals], registry).results
    assert verdict.status == "diverged"
    assert verdict.position == 3  # run_started, two steps, then run_completed
    assert verdict.recorded is not None and "R-SKU0 C-10" in verdict.recorded
    assert verdict.requested == 'completed with "something else"'


def test_the_recorded_input_no_longer_fitting_is_a_divergence(tmp_path: Path) -> None:
    journal = [
        JournalEntry(
            0, EventType.RUN_STARTED, None, b'{"workflow":"rc_shop","input":{"sku":[1,2]}}'
        )
    ]
    verdict = check_journal(journal, code("v1"), run_id="r-1")
    assert verdict.status == "diverged"
    assert verdict.run_id == "r-1"
    assert "replay raised" in verdict.message and "sku" in verdict.message


def test_check_journal_needs_a_run_started_event() -> None:
    with pytest.raises(ValueError, match="run_started"):
        check_journal([], code("v1"))


# --- files -------------------------------------------------------------------------------


def write(path: Path, value: Any) -> Path:
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    return path


STARTED = {"seq": 0, "type": "run_started", "command": None, "data": {"workflow": "w"}}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "Expecting property name"),
        ({"seq": 0}, "expected a JSON list of events"),
        ([{"seq": 0, "type": "run_started"}], "event 0 is not an object with seq"),
        ([STARTED, {**STARTED, "seq": 5, "type": "side_effect"}], "event 1 has seq 5"),
        ([STARTED, {**STARTED, "seq": 1, "type": "teleported"}], "unknown type 'teleported'"),
        ([{**STARTED, "type": "side_effect"}], "does not start with run_started"),
        ([], "does not start with run_started"),
    ],
)
def test_load_journal_names_what_is_wrong(tmp_path: Path, content: Any, message: str) -> None:
    path = write(tmp_path / "bad.json", content)
    with pytest.raises(ValueError) as info:
        load_journal(path)
    assert str(info.value).startswith(f"{path} is not a journal")
    assert message in str(info.value)


def test_journal_files_expands_directories_and_rejects_empty_ones(tmp_path: Path) -> None:
    write(tmp_path / "b.json", [STARTED])
    write(tmp_path / "a.json", [STARTED])
    write(tmp_path / "notes.txt", "not a journal")
    single = write(tmp_path / "c.journal", [STARTED])
    assert [p.name for p in journal_files([tmp_path, single])] == [
        "a.json",
        "b.json",
        "c.journal",
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no journal files"):
        list(journal_files([empty]))
    with pytest.raises(FileNotFoundError):
        list(journal_files([tmp_path / "missing.json"]))


@pytest.mark.parametrize("run_id", ["plain-id", "a/b", "x y%z", "..", "ünï"])
def test_journal_filename_round_trips_the_run_id(tmp_path: Path, run_id: str) -> None:
    name = journal_filename(run_id)
    assert "/" not in name
    path = write(tmp_path / name, [STARTED])
    (verdict,) = check_files([path], keel.Registry()).results
    assert verdict.run_id == run_id
    assert verdict.status == "skipped"
