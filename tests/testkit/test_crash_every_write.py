"""crash_every_write on real stores (memory, and SQLite files in a temp dir):
it must find the bug it exists for, and pass what is correct."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, Literal

import pytest

import keel
from keel.testing import (
    CrashReport,
    assert_survives_crashes,
    crash_every_write,
)
from keel.testing.crash_store import WRITES

from . import crash_app as app

STORES = ["memory", "sqlite"]
Store = Literal["memory", "sqlite"]


@pytest.fixture(autouse=True)
def _clean_ledger() -> None:
    app.reset()


def point(report: CrashReport, write: int, when: str) -> Any:
    return next(p for p in report.points if (p.write, p.when) == (write, when))


@pytest.mark.parametrize("store", STORES)
async def test_a_non_idempotent_step_is_reported_at_the_write_that_journals_it(
    store: Store,
) -> None:
    report = await crash_every_write(
        app.careless_order, "o-1", store=store, invariant=app.charged_once, reset=app.reset
    )
    assert report.outcome.state == "completed" and report.outcome.result == "receipt-o-1"
    assert [w.call for w in report.writes] == ["runs.commit", "runs.commit"]
    assert "step_completed step:kit.reserve#0" in report.writes[0].what
    assert "step_completed step:kit.charge_twice#0" in report.writes[1].what
    assert report.executions == {"kit.reserve": 1, "kit.charge_twice": 1}
    assert len(report.points) == 4  # before and after each write

    # The charge ran, the worker died before its completion was journaled, the
    # next worker charged again: the invariant breaks there, and only there.
    assert len(report.failures) == 1, report.format()
    failure = report.failures[0]
    assert (failure.write, failure.when, failure.check) == (2, "before", "invariant")
    assert (failure.step, failure.attempt, failure.execution) == ("kit.charge_twice", 1, 2)
    assert "charged twice: ['charge o-1', 'charge o-1']" in failure.message
    assert "by the second worker" in failure.message

    broken = point(report, 2, "before")
    assert broken.crashed_at is not None and broken.crashed_at.index == 2
    assert broken.executions == {"kit.reserve": 1, "kit.charge_twice": 2}
    assert [(e.step, e.number, e.worker, e.journaled_at) for e in broken.repeats] == [
        ("kit.charge_twice", 2, "second", None)  # at-least-once: its end was not journaled
    ]
    # Crashing after the write that journaled the charge: it never runs again.
    assert point(report, 2, "after").executions == {"kit.reserve": 1, "kit.charge_twice": 1}
    # Crashing before reserve's write re-runs reserve: expected, and not a failure.
    assert point(report, 1, "before").executions == {"kit.reserve": 2, "kit.charge_twice": 1}
    assert not point(report, 1, "before").failures

    with pytest.raises(AssertionError) as info:
        report.assert_passed()
    text = str(info.value)
    assert "crash before write 2: invariant: broken after step 'kit.charge_twice' attempt 1" in text
    assert "  2  runs.commit run crash-test: step_completed step:kit.charge_twice#0" in text


@pytest.mark.parametrize("store", STORES)
async def test_a_correct_workflow_survives_a_crash_at_every_write(store: Store) -> None:
    report = await assert_survives_crashes(
        app.five_steps, "o-2", store=store, invariant=app.charged_once, reset=app.reset
    )
    assert report.passed and report.failures == []
    assert report.outcome.result == "hold-o-2 receipt-o-2 shipped o-2 with label-o-2"
    assert report.executions == {
        "kit.reserve": 1,
        "kit.charge_once": 1,
        "kit.label": 1,
        "kit.ship": 1,
        "kit.email": 1,
    }
    assert len(report.writes) >= 5
    assert len(report.points) == 2 * len(report.writes)
    assert all(p.crashed_at is not None for p in report.points)
    assert all(p.outcome.same_as(report.outcome) for p in report.points)
    # Steps whose completion was not journaled at the crash ran again; every
    # repeat is one of those (none after its end was journaled).
    repeats = [e for p in report.points for e in p.repeats]
    assert repeats and all(e.journaled_at is None and e.worker == "second" for e in repeats)
    # Each write crashed after never re-runs the step that write journaled.
    for p in report.points:
        if p.when == "after" and p.crashed_at is not None:
            journaled = {e.step for e in p.repeats if f"step:{e.step}#" in p.crashed_at.what}
            assert not journaled, p


async def test_the_charge_with_an_idempotency_key_is_charged_once_at_every_crash() -> None:
    report = await crash_every_write(
        app.five_steps, "o-3", invariant=app.charged_once, reset=app.reset
    )
    reran_charge = [p for p in report.points if p.executions.get("kit.charge_once", 0) > 1]
    assert reran_charge, "no crash made the charge run again"
    assert report.passed, report.format()


async def test_retries_with_long_backoff_run_on_skipped_time() -> None:
    report = await assert_survives_crashes(app.retrying, "o-4", reset=app.reset)
    assert report.outcome.result == "ok after 3"
    assert report.executions == {"kit.flaky": 3}
    assert [(e.attempt, e.number, e.repeat) for e in report.step_executions] == [
        (1, 1, False),
        (2, 2, False),
        (3, 3, False),
    ]
    # Each failed attempt is journaled: a crash after that write never repeats
    # it (the next worker goes on with the next attempt); a crash before it does.
    for p in report.points:
        if p.crashed_at is None or "step_attempt_failed" not in p.crashed_at.what:
            continue
        if p.when == "after":
            assert p.executions == {"kit.flaky": 3} and p.repeats == [], p
        else:
            assert p.executions == {"kit.flaky": 4}, p
            [again] = p.repeats  # the attempt whose failure did not land, run again
            assert again.repeat and again.worker == "second"
            attempts = [e.attempt for e in p.step_executions]
            assert attempts.count(again.attempt) == 2 and sorted(set(attempts)) == [1, 2, 3]


@pytest.mark.parametrize("store", STORES)
async def test_a_failing_workflow_must_fail_the_same_way_after_every_crash(store: Store) -> None:
    report = await assert_survives_crashes(app.failing, "o-5", store=store)
    assert report.outcome.state == "failed"
    assert report.outcome.error_type == "keel.errors.StepFailedError"
    assert "o-5 is out of stock" in (report.outcome.error_message or "")


async def test_child_workflows_are_crashed_too() -> None:
    report = await assert_survives_crashes(app.parent, "o-6")
    assert report.outcome.result == "hold-o-6 shipped o-6 with label-o-6"
    assert any(w.run_id and w.run_id != "crash-test" for w in report.writes)  # the child's


@pytest.mark.parametrize("store", STORES)
async def test_dispatched_steps_are_crashed_in_their_task_worker(store: Store) -> None:
    report = await assert_survives_crashes(app.invoice, "o-9", store=store)
    assert "tasks.complete" in [w.call for w in report.writes]
    assert report.outcome.result == "shipped o-9 with pdf-o-9"
    # The task worker runs beside the run's driver, so which number its write
    # gets may vary between runs: look at the crashes that hit it.
    at_result = [p for p in report.points if p.crashed_at and p.crashed_at.call == "tasks.complete"]
    assert {p.when for p in at_result} == {"before", "after"}
    for p in at_result:
        # Before: its task lease ran out on the clock and it ran again; after:
        # the result stored in its task is used.
        assert p.executions["kit.render"] == (2 if p.when == "before" else 1), p


async def test_workflow_code_that_reads_step_effects_is_caught() -> None:
    """The workflow branches on a global its steps change, not on the journal:
    after a crash it does something else than the uncrashed run."""
    report = await crash_every_write(app.reads_ledger, "o-7", reset=app.reset)
    assert report.outcome.result == "1 entries"
    assert [(f.write, f.when, f.check) for f in report.failures] == [(1, "before", "result")]
    assert "the run ended completed with '2 entries'" in report.failures[0].message


@pytest.mark.parametrize(
    ("workflow", "arg", "calls", "result"),
    [
        (app.snapshots, 4, {"runs.commit": 4, "runs.save_snapshot": 2}, 4),
        (app.continues, 2, {"runs.commit": 5}, 3),
        (app.with_key, "o-10", {"keys.put": 1, "runs.commit": 2}, "done o-10 2"),
    ],
    ids=["snapshots", "continue-as-new", "idempotency-key"],
)
async def test_every_kind_of_write_is_a_crash_point(
    workflow: keel.WorkflowDef[Any, Any], arg: Any, calls: dict[str, int], result: Any
) -> None:
    report = await assert_survives_crashes(workflow, arg, reset=app.reset)
    assert dict(Counter(w.call for w in report.writes)) == calls
    assert report.outcome.result == result
    if workflow is app.with_key:  # a result stored under its key is reused, never re-run
        put = point(report, 1, "after")
        assert put.executions["kit.keyed"] == 1


async def test_an_invariant_that_returns_false_is_reported_at_the_end_too() -> None:
    report = await crash_every_write(
        app.careless_order, "o-8", invariant=lambda: app.ledger != [], reset=app.reset
    )
    # The ledger is empty until the charge runs, so the invariant is "broken"
    # after reserve in every run, the uncrashed one included.
    assert report.uncrashed_failures
    assert report.uncrashed_failures[0].step == "kit.reserve"
    assert "the invariant returned False" in report.uncrashed_failures[0].message


async def test_bad_use_is_refused_before_anything_runs() -> None:
    with pytest.raises(keel.ConfigurationError, match=r"needs a @keel\.workflow"):
        await crash_every_write(app.reserve, "o")  # type: ignore[arg-type]
    with pytest.raises(keel.ConfigurationError, match="'memory' or 'sqlite'"):
        await crash_every_write(app.careless_order, "o", store="postgres")  # type: ignore[arg-type]
    with pytest.raises(keel.ConfigurationError, match="timeout"):
        await crash_every_write(app.careless_order, "o", timeout=0)
    with pytest.raises(keel.ConfigurationError, match="invariant= takes a function"):
        await crash_every_write(app.careless_order, "o", invariant=True)  # type: ignore[arg-type]


def test_what_counts_as_a_write_is_the_worker_s_recording_calls() -> None:
    assert ("runs", "commit") in WRITES
    assert ("runs", "claim") not in WRITES and ("runs", "renew") not in WRITES


async def test_a_workflow_waiting_for_a_signal_is_reported_unfinished_at_once() -> None:
    report = await crash_every_write(app.waits_for_approval, "o-11", timeout=60)
    assert report.outcome.state == "unfinished" and report.points == []
    [failure] = report.uncrashed_failures
    assert failure.check == "unfinished"
    assert "waits for what no one will send, a signal? (crash-test suspended)" in failure.message


async def test_concurrent_crash_tests_count_their_own_executions() -> None:
    one, two = await asyncio.gather(
        crash_every_write(app.five_steps, "o-12"), crash_every_write(app.parent, "o-13")
    )
    assert one.passed and two.passed, (one.format(), two.format())
    assert one.executions["kit.charge_once"] == 1 and "kit.charge_once" not in two.executions
    assert two.executions == {"kit.reserve": 1, "kit.label": 1, "kit.ship": 1}
    assert app.reserve.fn is app.reserve.__wrapped__  # every body is back


async def test_graph_workflows_are_crashed_node_by_node() -> None:
    report = await assert_survives_crashes(app.numbers_wf, n=3, reset=app.reset)
    assert report.outcome.result == {"summed": 12}
    assert report.executions == {
        "kit.numbers.listed": 1,
        "kit.numbers.doubled": 3,
        "kit.numbers.summed": 1,
    }
    assert any(p.executions.get("kit.numbers.doubled", 0) > 3 for p in report.points)
