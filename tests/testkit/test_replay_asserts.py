"""assert_replays and the golden-folder helpers, over journals recorded on a
real SQLite file and exported as `keel runs export` writes them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

import keel
from keel.replay import export_runs, load_journal
from keel.store.sqlite import SQLiteStore
from keel.testing import (
    ReplayDiverged,
    assert_golden,
    assert_replays,
    golden_journals,
    replay_golden_folder,
)

from . import fakes_app as app


@pytest.fixture(autouse=True)
def _clean() -> None:
    app.done.clear()


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[Path, list[keel.HistoryEvent]]:
    """One finished run of fk.checkout, exported to ``tmp_path/golden``."""

    async def record() -> tuple[Path, list[keel.HistoryEvent]]:
        async with keel.Worker(SQLiteStore(tmp_path / "k.db"), poll_interval=0.02) as worker:
            client = worker.client()
            run = await client.start(app.checkout, "o-1", run_id="order-o-1")
            await run.result(timeout=10)
            history = await client.history(run.run_id)
            [path] = await export_runs(client, tmp_path / "golden")
        return path, history

    return asyncio.run(record())


def changed(variant: str) -> keel.WorkflowDef[[str], str]:
    """fk.checkout as a later edit of its code would define it."""
    registry = keel.Registry()
    if variant == "reordered":

        @keel.workflow(name="fk.checkout", registry=registry)
        async def reordered(order: str) -> str:
            hold = await app.reserve.aio(order)  # reserve now comes before the quote
            amount = await app.quote.aio(order)
            return f"{hold} {await app.charge.aio(order, amount)}"

        return reordered

    @keel.workflow(name="fk.checkout", registry=registry)
    async def new_result(order: str) -> str:
        amount = await app.quote.aio(order)
        async with keel.saga():
            hold = await app.reserve.aio(order)
            receipt = await app.charge.aio(order, amount)
        return f"{receipt} {hold}"  # same commands, another result

    return new_result


def test_unchanged_code_replays_the_journal_in_every_form(
    recorded: tuple[Path, list[keel.HistoryEvent]],
) -> None:
    path, history = recorded
    text = path.read_text()
    forms: list[object] = [
        path,
        str(path),
        text,
        text.encode(),
        json.loads(text),
        history,
        load_journal(path),
    ]
    for form in forms:
        report = assert_replays(app.checkout, form)  # type: ignore[arg-type]
        assert report.status == "completed" and report.result == "hold-o-1 receipt-o-1"


def test_a_reordered_workflow_fails_with_a_readable_diff(
    recorded: tuple[Path, list[keel.HistoryEvent]],
) -> None:
    path, _ = recorded
    with pytest.raises(ReplayDiverged) as info:
        assert_replays(changed("reordered"), path)
    error = info.value
    assert isinstance(error, AssertionError)
    assert error.position == 1
    assert error.recorded == "step_completed of step 'fk.quote' (#0)"
    assert error.requested == "step 'fk.reserve' (#0)"
    text = str(error)
    assert f"workflow 'fk.checkout' does not replay the journal {path}" in text
    assert "at event 1:" in text
    assert "the journal has:  step_completed of step 'fk.quote' (#0)" in text
    assert "the code now did: step 'fk.reserve' (#0)" in text
    assert ">>    1  step_completed       step:fk.quote#0" in text
    assert "        0  run_started" in text


def test_a_different_result_is_a_divergence_at_the_last_event(
    recorded: tuple[Path, list[keel.HistoryEvent]],
) -> None:
    _, history = recorded
    with pytest.raises(ReplayDiverged) as info:
        assert_replays(changed("new_result"), history)
    last = history[-1].seq
    assert info.value.position == last
    assert 'run_completed "hold-o-1 receipt-o-1"' in info.value.recorded
    assert f">> {last:>4}  run_completed" in str(info.value)


def test_not_a_journal_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="starts with its run_started"):
        assert_replays(
            app.checkout, [{"seq": 0, "type": "step_completed", "command": None, "data": {}}]
        )
    with pytest.raises(ValueError, match="a journal is a list of events"):
        assert_replays(app.checkout, [])
    with pytest.raises(FileNotFoundError):
        assert_replays(app.checkout, tmp_path / "missing.json")


def test_golden_folder_helpers(recorded: tuple[Path, list[keel.HistoryEvent]]) -> None:
    path, _ = recorded
    folder = path.parent
    assert golden_journals(folder) == [path]
    assert assert_golden(path).outcome == "completed"  # found by name in the default registry
    report = replay_golden_folder(folder)
    assert report.summary() == "1 journal checked: 1 replay, 0 diverged, 0 skipped"

    registry = keel.Registry()

    @keel.workflow(name="fk.checkout", registry=registry)
    async def reordered(order: str) -> str:
        await app.reserve.aio(order)
        return "x"

    with pytest.raises(ReplayDiverged, match=r"the code now did: step 'fk\.reserve'"):
        assert_golden(path, registry)
    with pytest.raises(AssertionError) as info:
        replay_golden_folder(folder, registry)
    assert "1 journal checked: 0 replay, 1 diverged, 0 skipped" in str(info.value)
    assert f"does not replay the journal {path}" in str(info.value)
    # A journal of a workflow the registry lacks fails, unless strict=False.
    with pytest.raises(
        AssertionError, match=r"not replayed: workflow 'fk\.checkout' is not registered"
    ):
        replay_golden_folder(folder, keel.Registry())
    assert replay_golden_folder(folder, keel.Registry(), strict=False).skipped
