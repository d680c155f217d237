"""Where a retry or fork cuts a journal and what it copies (keel.core.fork)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from keel.core.events import EventType
from keel.core.fork import plan_fork, retry_point
from keel.core.journal import JournalEntry
from keel.errors import ForkPointError

T = EventType


Row = tuple[EventType, str | None] | tuple[EventType, str | None, dict[str, Any]]


def journal(*rows: Row) -> list[JournalEntry]:
    entries = [JournalEntry(0, T.RUN_STARTED, None, b'{"workflow":"wf","version":"1","input":[]}')]
    for row in rows:
        data = row[2] if len(row) == 3 else {}  # type: ignore[misc]
        entries.append(JournalEntry(len(entries), row[0], row[1], json.dumps(data).encode()))
    return entries


def seqs(plan_events: list[Any]) -> list[int]:
    return [e.seq for e in plan_events]


def test_a_retry_reruns_the_failed_step_from_its_first_attempt() -> None:
    j = journal(
        (T.STEP_COMPLETED, "step:a#0"),  # 1
        (T.STEP_ATTEMPT_FAILED, "step:b#0"),  # 2
        (T.TIMER_STARTED, "sleep:t#0"),  # 3 (a parallel timer, kept)
        (T.STEP_FAILED, "step:b#0"),  # 4
        (T.RUN_FAILED, None, {"error": {"type": "keel.errors.StepFailedError"}}),
    )
    assert retry_point(j) == (4, "step:b#0")
    plan = plan_fork(j)
    assert (plan.fork_seq, plan.redo, seqs(plan.events)) == (4, "step:b#0", [1, 3])


def test_a_nondeterminism_failure_is_cut_where_replay_broke() -> None:
    error = {
        "type": "keel.errors.NondeterminismError",
        "message": "nondeterminism in run 'r' at journal position 2: the journal recorded x",
    }
    j = journal(
        (T.STEP_COMPLETED, "step:a#0"),
        (T.STEP_COMPLETED, "step:b#0"),
        (T.STEP_FAILED, "step:c#0"),  # after the divergence: not where it is cut
        (T.RUN_FAILED, None, {"error": error}),
    )
    plan = plan_fork(j)
    assert (plan.fork_seq, plan.redo, seqs(plan.events)) == (2, None, [1])


def test_a_code_error_is_cut_at_the_end_and_a_cancel_where_it_reached_the_code() -> None:
    failed = journal((T.STEP_COMPLETED, "step:a#0"), (T.RUN_FAILED, None, {"error": {}}))
    assert retry_point(failed) == (2, None)
    cancelled = journal(
        (T.STEP_COMPLETED, "step:a#0"),
        (T.CANCEL_REQUESTED, None),
        (T.STEP_COMPLETED, "step:cleanup#0"),
        (T.RUN_CANCELLED, None),
    )
    assert retry_point(cancelled) == (2, None)
    terminated = journal((T.STEP_COMPLETED, "step:a#0"), (T.RUN_TERMINATED, None))
    assert plan_fork(terminated).fork_seq == 2


def test_a_fork_at_a_command_reruns_it_and_drops_its_earlier_events() -> None:
    j = journal(
        (T.STEP_COMPLETED, "step:a#0"),  # 1
        (T.STEP_ATTEMPT_FAILED, "step:b#0"),  # 2
        (T.SIDE_EFFECT, "now:now#0"),  # 3
        (T.STEP_COMPLETED, "step:b#0"),  # 4
        (T.STEP_COMPLETED, "step:c#0"),  # 5
        (T.RUN_COMPLETED, None),
    )
    plan = plan_fork(j, "step:b#0")
    assert (plan.fork_seq, seqs(plan.events)) == (4, [1, 3])
    assert seqs(plan_fork(j, 3).events) == [1, 2]
    with pytest.raises(ForkPointError, match="no command 'step:z#0'"):
        plan_fork(j, "step:z#0")
    for bad in (0, 7):
        with pytest.raises(ForkPointError, match=r"not in 1\.\.6"):
            plan_fork(j, bad)
    with pytest.raises(TypeError):
        plan_fork(j, True)


def test_an_open_dispatched_step_is_dispatched_again() -> None:
    j = journal(
        (T.STEP_DISPATCHED, "step:q#0"),  # 1: open at the cut
        (T.STEP_COMPLETED, "step:a#0"),  # 2
        (T.STEP_DISPATCHED, "step:r#0"),  # 3
        (T.STEP_COMPLETED, "step:r#0"),  # 4
        (T.RUN_FAILED, None, {"error": {}}),
    )
    assert seqs(plan_fork(j).events) == [2, 3, 4]


def test_a_point_with_an_open_child_is_refused_and_a_retry_moves_before_it() -> None:
    j = journal(
        (T.STEP_COMPLETED, "step:a#0"),  # 1
        (T.CHILD_STARTED, "child:kid#0"),  # 2
        (T.STEP_COMPLETED, "step:b#0"),  # 3
        (T.RUN_FAILED, None, {"error": {}}),
    )
    with pytest.raises(ForkPointError, match="child 'child:kid#0' is still running"):
        plan_fork(j, 4)
    plan = plan_fork(j)  # the retry's point moves back before the child started
    assert (plan.fork_seq, seqs(plan.events)) == (2, [1])
    # Re-running the child itself is fine: its events go.
    ended = journal(
        (T.CHILD_STARTED, "child:kid#0"),
        (T.CHILD_FAILED, "child:kid#0"),
        (T.RUN_FAILED, None, {"error": {}}),
    )
    plan = plan_fork(ended)
    assert (plan.fork_seq, plan.redo, plan.events) == (2, "child:kid#0", [])
