"""The journal fold (keel.core.fold): a run's state at every event, from events alone."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import pytest

from keel.core import events as ev
from keel.core.fold import fold, view_at, views


@dataclass(frozen=True)
class Row:
    seq: int
    type: str
    command: str | None
    data: bytes
    created_at: float


def journal(*items: tuple[str | None, ev.Event]) -> list[Row]:
    rows = []
    for seq, (command, event) in enumerate(items):
        type_, data = ev.encode(event)
        rows.append(Row(seq, type_.value, command, data, 100.0 + seq))
    return rows


def raw(value: object) -> msgspec.Raw:
    return msgspec.Raw(msgspec.json.encode(value))


ERR = {"type": "ConnectionError", "message": "down", "traceback": ""}
FAILED_1 = ev.StepAttemptFailed(attempt=1, error=ERR, retry_at=103.5, started_at=100.5, worker="w1")
DONE_2 = ev.StepCompleted(result=raw({"ok": True}), attempt=2, started_at=103.6, worker="w2")
CHILD = ev.ChildStarted(child_run_id="r-child", workflow="ship", parent_close="cancel")

RUN = journal(
    (None, ev.run_started("order", "v1", b"[7]")),
    ("step:charge#0", FAILED_1),
    ("step:charge#0", DONE_2),
    ("sleep:sleep#0", ev.TimerStarted(duration=60, fire_at=164.0)),
    ("signal:approve#0", ev.SignalAwaited(name="approve", timeout=None, deadline=None)),
    ("child:ship#0", CHILD),
    ("sleep:sleep#0", ev.TimerFired()),
    ("signal:approve#0", ev.SignalReceived(name="approve", payload=raw("yes"), signal_id=4)),
    ("child:ship#0", ev.ChildCompleted(child_run_id="r-child", result=raw(3))),
    ("now:now#0", ev.SideEffect(value=raw(1.5))),
    (None, ev.RunCompleted(result=raw("done"))),
)  # fmt: skip


def test_one_view_per_event_in_order() -> None:
    seen = list(views(RUN))
    assert [v.seq for v in seen] == list(range(len(RUN)))
    assert [v.at for v in seen] == [r.created_at for r in RUN]
    assert seen[0].workflow == "order" and seen[0].input == b"[7]" and seen[0].commands == {}


def test_a_retried_step_keeps_each_attempt_with_its_start_worker_and_error() -> None:
    after_fail = view_at(RUN, 1)
    assert after_fail is not None
    step = after_fail.commands["step:charge#0"]
    assert step.status == "retrying" and step.retry_at == 103.5
    assert [(a.number, a.outcome, a.started_at, a.worker) for a in step.attempts] == [
        (1, "failed", 100.5, "w1")
    ]
    done = view_at(RUN, 2)
    assert done is not None
    step = done.commands["step:charge#0"]
    assert step.status == "completed" and msgspec.json.decode(step.value or b"") == {"ok": True}
    assert [(a.number, a.outcome, a.ended_at, a.worker) for a in step.attempts] == [
        (1, "failed", 101.0, "w1"),
        (2, "completed", 102.0, "w2"),
    ]
    assert step.attempts[0].error == ERR and step.retry_at is None


def test_pending_commands_at_an_event_and_after_they_resolve() -> None:
    middle = view_at(RUN, 5)
    assert middle is not None
    assert [c.command for c in middle.pending] == [
        "sleep:sleep#0",
        "signal:approve#0",
        "child:ship#0",
    ]
    timer, wait, child = middle.pending
    assert (timer.status, timer.fire_at) == ("waiting", 164.0)
    assert (wait.status, wait.signal) == ("waiting", "approve")
    assert (child.status, child.child_run_id, child.child_workflow) == (
        "started",
        "r-child",
        "ship",
    )
    assert middle.signals == () and middle.status == "running"

    end = fold(RUN)
    assert end is not None
    assert end.pending == []
    assert [c.status for c in end.commands.values()] == [
        "completed", "fired", "received", "completed", "recorded"
    ]  # fmt: skip
    assert [(s.name, s.payload, s.signal_id) for s in end.signals] == [("approve", b'"yes"', 4)]
    assert end.status == "completed" and end.result == b'"done"'
    assert end.of_kind("child")[0].value == b"3"


def test_earlier_views_are_not_changed_by_later_events() -> None:
    seen = list(views(RUN))
    assert seen[3].commands["sleep:sleep#0"].status == "waiting"
    assert seen[6].commands["sleep:sleep#0"].status == "fired"
    assert "child:ship#0" not in seen[4].commands


def test_a_step_that_failed_for_good_and_the_failed_run() -> None:
    rows = journal(
        (None, ev.run_started("w", "v", b"[]")),
        ("step:s#0", ev.StepAttemptFailed(attempt=1, error=ERR, retry_at=101.0)),
        ("step:s#0", ev.StepFailed(attempts=2, error=ERR)),
        (None, ev.RunFailed(error=ERR)),
    )
    end = fold(rows)
    assert end is not None
    step = end.commands["step:s#0"]
    assert step.status == "failed" and step.error == ERR
    assert [(a.number, a.outcome, a.started_at) for a in step.attempts] == [
        (1, "failed", None),
        (2, "failed", None),
    ]
    assert end.status == "failed" and end.error == ERR


def test_a_dispatched_step_signal_timeout_cancel_and_continue() -> None:
    rows = journal(
        (None, ev.run_started("w", "v", b"[]")),
        ("step:render#0", ev.StepDispatched(queue="gpu")),
        ("signal:go#0", ev.SignalAwaited(name="go", timeout=5, deadline=110.0)),
        ("signal:go#0", ev.SignalTimedOut(name="go", timeout=5)),
        (None, ev.CancelRequested()),
        (None, ev.RunContinued(continued_to="r2", version="v", input=raw([]))),
    )
    seen = list(views(rows))
    assert seen[1].commands["step:render#0"].status == "dispatched"
    assert seen[1].commands["step:render#0"].queue == "gpu"
    assert seen[2].commands["signal:go#0"].deadline == 110.0
    assert seen[3].commands["signal:go#0"].status == "timed_out"
    assert not seen[3].cancel_requested and seen[4].cancel_requested
    assert (seen[5].status, seen[5].continued_to) == ("continued", "r2")


def test_the_end_of_a_run_drops_what_it_still_waited_for() -> None:
    rows = journal(
        (None, ev.run_started("w", "v", b"[]")),
        ("signal:go#0", ev.SignalAwaited(name="go")),
        ("sleep:sleep#0", ev.TimerStarted(duration=5, fire_at=109.0)),
        ("sleep:sleep#0", ev.TimerFired()),
        (None, ev.CancelRequested()),
        (None, ev.RunCancelled(reason="by client")),
    )
    seen = list(views(rows))
    assert [c.command for c in seen[4].pending] == ["signal:go#0"]
    end = seen[-1]
    assert end.pending == [] and end.status == "cancelled"
    wait = end.commands["signal:go#0"]
    assert (wait.status, wait.updated_at, wait.last_seq) == ("dropped", 105.0, 5)
    assert end.commands["sleep:sleep#0"].status == "fired"  # resolved before: kept


def test_view_at_past_the_end_and_an_empty_journal() -> None:
    assert view_at(RUN, 99) is None
    assert fold([]) is None


def test_an_event_whose_data_does_not_fit_its_type_is_refused() -> None:
    bad = [*RUN[:2], Row(2, "step_completed", "step:charge#0", b'{"attempt": "two"}', 102.0)]
    with pytest.raises(ValueError):
        list(views(bad))


def test_a_steps_input_comes_from_its_first_event() -> None:
    first = ev.StepAttemptFailed(attempt=1, error=ERR, args_hash="h1", input=raw({"amount": 7}))
    rows = journal(
        (None, ev.run_started("order", "v1", b"[7]")),
        ("step:charge#0", first),
        ("step:charge#0", ev.StepCompleted(result=raw(1), attempt=2, args_hash="h1")),
        ("step:big#0", ev.StepDispatched(queue="q", args_hash="h2", input_size=9000)),
        ("step:old#0", ev.StepCompleted(result=raw(2), args_hash="h3")),  # an older writer
    )  # fmt: skip
    view = fold(rows)
    assert view is not None
    charge, big, old = view.commands.values()
    assert (charge.input, charge.input_size, charge.args_hash) == (b'{"amount":7}', None, "h1")
    assert (big.input, big.input_size, big.args_hash) == (None, 9000, "h2")
    assert (old.input, old.input_size, old.args_hash) == (None, None, "h3")
    # Time travel: before the step's first event it has no record at all.
    at_start = view_at(rows, 0)
    assert at_start is not None and "step:charge#0" not in at_start.commands
