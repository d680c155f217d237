"""The worker's pure planners: from a pending command, the store's clock and
what was read, the actions to take. No store, no worker, no event loop: the
commands come from an execution of a real workflow at its live tail."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec
import pytest

import keel
from keel.core.commands import Command, Outcome
from keel.core.events import (
    ChildStarted,
    Event,
    EventType,
    SignalAwaited,
    StepAttemptFailed,
    StepDispatched,
    TimerFired,
    TimerStarted,
    encode_data,
)
from keel.core.replay import Execution
from keel.core.states import RunState
from keel.store.base import NewRun, RunRecord, SignalRecord, TaskRecord
from keel.worker.actions import (
    Commit,
    ConsumeSignal,
    Continue,
    Dispatch,
    Finish,
    RecordEvent,
    ReportAttempt,
    ReportFailed,
    StartAttempt,
    StartChildren,
    StoreKeyed,
    Suspend,
    WaitUntil,
    WakeAt,
    WakeOnChild,
    WakeOnSignal,
    WakeOnTask,
)
from keel.worker.plan import children, ending, queued, signals, steps, timers
from keel.worker.plan.turn import Reads, Settings, plan_turn, suspension
from keel.worker.step_runner import StoredResult
from tests.unit.test_replay import STARTED, FixedLive

FAST = keel.RetryPolicy(max_attempts=3, initial_interval=2.0, backoff_coefficient=2, jitter=0.0)


@keel.step(name="plan.double", retry=FAST)
def double(x: int) -> int:
    return 2 * x


@keel.step(name="plan.render", queue="render", priority=3, retry=FAST)
def render(x: int) -> str:
    return f"page {x}"


@keel.step(name="plan.keyed_render", queue="render", idempotency_key=lambda x: f"k{x}")
def keyed_render(x: int) -> str:
    return f"page {x}"


@keel.workflow(name="plan.kid")
async def kid(x: int) -> int:
    return x


@keel.workflow(name="plan.one_step")
async def one_step(x: int) -> int:
    return await double(x)


@keel.workflow(name="plan.nap")
async def nap() -> None:
    await keel.sleep(10)


@keel.workflow(name="plan.approval")
async def approval() -> Any:
    return await keel.wait_for_signal("approve", timeout=30)


@keel.workflow(name="plan.two_approvals")
async def two_approvals() -> Any:
    first, second = keel.wait_for_signal("approve"), keel.wait_for_signal("approve")
    return await asyncio.gather(first, second)


@keel.workflow(name="plan.child")
async def child_wf(x: int) -> int:
    return await keel.run_child(kid, x, child_id="kid-1")


@keel.workflow(name="plan.render_page")
async def render_page(x: int) -> str:
    return await render(x)


@keel.workflow(name="plan.keyed_page")
async def keyed_page(x: int) -> str:
    return await keyed_render(x)


@keel.workflow(name="plan.fan")
async def fan() -> Any:
    return await asyncio.gather(keel.sleep(0), render(1), keel.sleep(60))


def live(fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Execution:
    """``fn`` run to its live tail, with nothing journaled."""
    ex = Execution("r1", fn, args, {}, [STARTED], FixedLive())
    ex.start()
    return ex


def the_command(ex: Execution) -> Command:
    [cmd] = ex.pending()
    return cmd


def run_record(run_id: str = "r1", *, depth: int = 0, **fields: Any) -> RunRecord:
    row: dict[str, Any] = {
        "run_id": run_id,
        "workflow": "plan.child",
        "version": "1",
        "state": RunState.RUNNING,
        "input": b"[]",
        "result": None,
        "error": None,
        "created_at": 0.0,
        "updated_at": 0.0,
        "wake_at": None,
        "lease_owner": None,
        "lease_token": 1,
        "lease_expires_at": None,
        "cancel_requested": False,
        "next_seq": 1,
        "depth": depth,
    }
    row.update(fields)
    return RunRecord(**row)


def data(action: object) -> dict[str, Any]:
    """A RecordEvent's event data as the journal stores it, decoded to plain JSON."""
    assert isinstance(action, RecordEvent)
    decoded: dict[str, Any] = msgspec.json.decode(encode_data(action.event))
    return decoded


def types(actions: list[Any]) -> list[Any]:
    """Each action's event type (a RecordEvent) or class."""
    return [a.event.TYPE if isinstance(a, RecordEvent) else type(a) for a in actions]


# --- timers ----------------------------------------------------------------------------


def test_a_new_timer_is_journaled_with_its_fire_time_and_wakes_the_run_then() -> None:
    cmd = the_command(live(nap.fn))
    planned = timers.plan_timer(cmd, now=100.0, inline_wait=1.0)
    assert types(planned) == [EventType.TIMER_STARTED, WakeAt]
    assert data(planned[0]) == {"duration": 10.0, "fire_at": 110.0}
    assert planned[1] == WakeAt(110.0)


def test_a_due_timer_plans_timer_fired() -> None:
    ex = live(nap.fn)
    cmd = the_command(ex)
    ex.record(cmd, TimerStarted(duration=10.0, fire_at=110.0))
    planned = timers.plan_timer(cmd, now=110.0, inline_wait=1.0)
    assert types(planned) == [EventType.TIMER_FIRED]
    assert planned[0].command is cmd  # type: ignore[union-attr]


def test_a_timer_firing_within_inline_wait_is_waited_for_here() -> None:
    ex = live(nap.fn)
    cmd = the_command(ex)
    ex.record(cmd, TimerStarted(duration=10.0, fire_at=110.0))
    assert timers.plan_timer(cmd, now=109.5, inline_wait=1.0) == [WaitUntil(cmd, "timer", 110.0)]
    assert timers.plan_timer(cmd, now=105.0, inline_wait=1.0) == [WakeAt(110.0)]


# --- inline steps ------------------------------------------------------------------------


def test_a_step_with_no_attempt_yet_starts_attempt_one() -> None:
    cmd = the_command(live(one_step.fn, 4))
    assert steps.plan_attempt(cmd, now=100.0, inline_wait=1.0) == [StartAttempt(cmd, 1)]


def _retrying(retry_at: float) -> Command:
    ex = live(one_step.fn, 4)
    cmd = the_command(ex)
    failed = StepAttemptFailed(attempt=1, error={"type": "x", "message": "y"}, retry_at=retry_at)
    ex.record(cmd, failed)
    return cmd


def test_a_retry_not_yet_due_within_inline_wait_plans_a_wait() -> None:
    cmd = _retrying(retry_at=100.5)
    assert steps.plan_attempt(cmd, now=100.0, inline_wait=1.0) == [WaitUntil(cmd, "retry", 100.5)]


def test_a_retry_beyond_inline_wait_plans_a_wake() -> None:
    cmd = _retrying(retry_at=130.0)
    assert steps.plan_attempt(cmd, now=100.0, inline_wait=1.0) == [WakeAt(130.0)]


def test_a_due_retry_starts_the_next_attempt() -> None:
    cmd = _retrying(retry_at=100.0)
    assert steps.plan_attempt(cmd, now=100.0, inline_wait=1.0) == [StartAttempt(cmd, 2)]


def test_an_attempt_that_returned_plans_step_completed() -> None:
    cmd = the_command(live(one_step.fn, 4))
    planned = steps.plan_attempt_ended(cmd, 1, steps.Ended(value=8), now=0.0, jitter=0.5)
    assert types(planned) == [EventType.STEP_COMPLETED]
    # The digest is the sha256 of the result's encoded bytes (b"8").
    digest = hashlib.sha256(b"8").hexdigest()
    assert data(planned[0]) == {
        "result": 8,
        "args_hash": cmd.args_hash,
        "attempt": 1,
        "digest": digest,
        "input": {"x": 4},  # the step's first event carries its arguments
    }


def test_only_a_steps_first_event_carries_its_input() -> None:
    cmd = the_command(live(one_step.fn, 4))
    ended = steps.Ended(error=ConnectionError("down"))
    _, first = steps.plan_attempt_ended(cmd, 1, ended, now=1000.0, jitter=0.5)
    assert data(first)["input"] == {"x": 4}
    retried = _retrying(retry_at=100.0)  # attempt 1 failed and is journaled
    [completed] = steps.plan_attempt_ended(retried, 2, steps.Ended(value=8), now=0.0, jitter=0.5)
    _, failed = steps.plan_attempt_ended(retried, 3, ended, now=0.0, jitter=0.5)
    assert "input" not in data(completed) and "input" not in data(failed)
    assert data(completed)["args_hash"] == retried.args_hash


def test_arguments_over_the_cap_journal_only_their_size() -> None:
    from keel.core.events import INPUT_CAP

    cmd = the_command(live(one_step.fn, 4))
    cmd.args = b'{"x":"' + b"a" * INPUT_CAP + b'"}'
    [event] = steps.plan_attempt_ended(cmd, 1, steps.Ended(value=8), now=0.0, jitter=0.5)
    assert "input" not in data(event) and data(event)["input_size"] == INPUT_CAP + 8
    cmd.args = b'{"x":"' + b"a" * (INPUT_CAP - 8) + b'"}'  # exactly the cap: kept
    [event] = steps.plan_attempt_ended(cmd, 1, steps.Ended(value=8), now=0.0, jitter=0.5)
    assert data(event)["input"] == {"x": "a" * (INPUT_CAP - 8)}


def test_a_keyed_attempt_that_reused_a_stored_result_says_so() -> None:
    cmd = the_command(live(one_step.fn, 4))
    ended = steps.Ended(value=StoredResult(b"9", reused=True))
    [event] = steps.plan_attempt_ended(cmd, 1, ended, now=0.0, jitter=0.5)
    assert data(event)["result"] == 9 and data(event)["reused"] is True


def test_a_failed_attempt_with_attempts_left_plans_a_retry_from_now() -> None:
    cmd = the_command(live(one_step.fn, 4))
    ended = steps.Ended(error=ConnectionError("down"))
    report, event = steps.plan_attempt_ended(cmd, 1, ended, now=1000.0, jitter=0.5)
    assert isinstance(report, ReportAttempt) and report.then == "retrying in %.3gs"
    assert report.args == (2.0,) and report.max_attempts == 3
    assert types([event]) == [EventType.STEP_ATTEMPT_FAILED]
    assert data(event)["retry_at"] == 1002.0 and data(event)["attempt"] == 1
    assert data(event)["error"]["type"] == "builtins.ConnectionError"


def test_the_last_failed_attempt_fails_the_step() -> None:
    cmd = the_command(live(one_step.fn, 4))
    ended = steps.Ended(error=ConnectionError("down"))
    report, event = steps.plan_attempt_ended(cmd, 3, ended, now=1000.0, jitter=0.5)
    assert isinstance(report, ReportAttempt) and report.then == "no attempts left"
    assert types([event]) == [EventType.STEP_FAILED] and data(event)["attempts"] == 3


def test_a_result_that_cannot_be_encoded_fails_the_step_without_retry() -> None:
    cmd = the_command(live(one_step.fn, 4))
    report, event = steps.plan_attempt_ended(
        cmd, 1, steps.Ended(value=object()), now=0.0, jitter=0.5
    )
    assert isinstance(report, ReportAttempt) and report.then == "not retried"
    assert types([event]) == [EventType.STEP_FAILED]


# --- signals ---------------------------------------------------------------------------


def test_a_signal_present_plans_signal_received_and_its_consumption() -> None:
    cmd = the_command(live(approval.fn))
    signal = SignalRecord(7, "r1", "approve", b'{"ok": true}', 0.0)
    planned = signals.plan_signal(cmd, now=100.0, signal=signal)
    assert types(planned) == [EventType.SIGNAL_RECEIVED, ConsumeSignal]
    assert data(planned[0]) == {"name": "approve", "payload": {"ok": True}, "signal_id": 7}
    assert planned[1] == ConsumeSignal(7)


def test_no_signal_yet_journals_the_wait_once_with_its_deadline() -> None:
    ex = live(approval.fn)
    cmd = the_command(ex)
    planned = signals.plan_signal(cmd, now=100.0, signal=None)
    assert types(planned) == [EventType.SIGNAL_AWAITED, WakeOnSignal, WakeAt]
    assert data(planned[0]) == {"name": "approve", "timeout": 30.0, "deadline": 130.0}
    assert planned[1:] == [WakeOnSignal("approve"), WakeAt(130.0)]
    ex.record(cmd, event_of(planned[0]))
    assert signals.plan_signal(cmd, now=101.0, signal=None) == planned[1:]


def test_a_signal_wait_past_its_deadline_times_out() -> None:
    ex = live(approval.fn)
    cmd = the_command(ex)
    ex.record(cmd, SignalAwaited(name="approve", deadline=130.0))
    planned = signals.plan_signal(cmd, now=130.0, signal=None)
    assert types(planned) == [EventType.SIGNAL_TIMED_OUT]


def event_of(action: object) -> Event:
    assert isinstance(action, RecordEvent)
    return action.event


# --- children ----------------------------------------------------------------------------


def _started_child() -> Command:
    ex = live(child_wf.fn, 5)
    cmd = the_command(ex)
    ex.record(cmd, ChildStarted(child_run_id="kid-1"))
    return cmd


def test_a_child_that_ended_plans_its_outcome_event() -> None:
    cmd = _started_child()
    done = run_record("kid-1", state=RunState.COMPLETED, result=b"5")
    assert types(children.plan_outcome(cmd, done)) == [EventType.CHILD_COMPLETED]
    assert data(children.plan_outcome(cmd, done)[0]) == {"child_run_id": "kid-1", "result": 5}
    failed = run_record("kid-1", state=RunState.FAILED, error=b'{"type": "E", "message": "m"}')
    [event] = children.plan_outcome(cmd, failed)
    assert types([event]) == [EventType.CHILD_FAILED]
    assert data(event)["error"] == {"type": "E", "message": "m"}
    cancelled = run_record("kid-1", state=RunState.CANCELLED)
    assert types(children.plan_outcome(cmd, cancelled)) == [EventType.CHILD_CANCELLED]


def test_a_running_child_wakes_the_parent_when_the_latest_run_of_its_chain_ends() -> None:
    cmd = _started_child()
    tip = run_record("kid-1/continue:1", state=RunState.SUSPENDED)
    assert children.plan_outcome(cmd, tip) == [WakeOnChild("kid-1/continue:1")]


def test_a_started_child_missing_from_the_store_fails() -> None:
    [event] = children.plan_outcome(_started_child(), None)
    assert data(event)["error"]["type"] == "keel.errors.RunNotFoundError"


def test_a_child_to_start_is_journaled_with_the_run_to_create() -> None:
    cmd = the_command(live(child_wf.fn, 5))
    parent = run_record("p", depth=2)
    started, start = children.plan_start(cmd, parent, 16, taken=False, starting=())
    assert types([started]) == [EventType.CHILD_STARTED]
    assert isinstance(start, StartChildren)
    [run] = start.runs
    assert isinstance(run, NewRun)
    assert (run.run_id, run.workflow, run.parent_run_id, run.depth) == ("kid-1", "plan.kid", "p", 3)
    assert run.input == cmd.args


@pytest.mark.parametrize(
    ("depth", "taken", "starting", "error"),
    [
        (16, False, (), "keel.errors.ChildWorkflowError"),
        (0, True, (), "keel.errors.RunExistsError"),
        (0, False, ("kid-1",), "keel.errors.RunExistsError"),
    ],
    ids=["too deep", "id taken", "id started by another child this turn"],
)
def test_a_child_that_cannot_start_fails_at_once(
    depth: int, taken: bool, starting: tuple[str, ...], error: str
) -> None:
    cmd = the_command(live(child_wf.fn, 5))
    [event] = children.plan_start(cmd, run_record("p", depth=depth), 16, taken, starting)
    assert types([event]) == [EventType.CHILD_FAILED]
    assert data(event)["started"] is False and data(event)["error"]["type"] == error


# --- dispatched steps -----------------------------------------------------------------------


def _task(state: str, result: bytes | None = None) -> TaskRecord:
    return TaskRecord(
        task_id=4, run_id="r1", command="step:plan.render#0", step="plan.render",
        queue="render", priority=3, args=b"[1]", attempt=2, max_attempts=3, state=state,
        available_at=0.0, lease_owner=None, lease_expires_at=None, result=result, error=None,
        created_at=0.0,
    )  # fmt: skip


def test_a_queued_step_is_dispatched_with_its_task() -> None:
    cmd = the_command(live(render_page.fn, 1))
    event, dispatch = queued.plan_dispatch(cmd, stored=None)
    assert data(event) == {
        "queue": "render",
        "priority": 3,
        "args_hash": cmd.args_hash,
        "input": {"x": 1},
    }
    assert isinstance(dispatch, Dispatch)
    [task] = dispatch.tasks
    assert (task.command, task.queue, task.priority, task.max_attempts) == (cmd.key, "render", 3, 3)


def test_a_dispatched_step_waits_for_its_task_then_journals_its_outcome() -> None:
    ex = live(render_page.fn, 1)
    cmd = the_command(ex)
    ex.record(cmd, StepDispatched(queue="render"))
    assert queued.plan_task(cmd, _task("leased"), stored=None) == [WakeOnTask(cmd.key)]
    [event] = queued.plan_task(cmd, _task("completed", b'"page 1"'), stored=None)
    assert types([event]) == [EventType.STEP_COMPLETED]
    assert data(event)["result"] == "page 1" and data(event)["task_id"] == 4
    assert "input" not in data(event)  # step_dispatched carried it
    [missing] = queued.plan_task(cmd, None, stored=None)
    assert types([missing]) == [EventType.STEP_FAILED]


def test_a_keyed_task_result_is_stored_under_its_key_before_it_is_journaled() -> None:
    ex = live(keyed_page.fn, 1)
    cmd = the_command(ex)
    ex.record(cmd, StepDispatched(queue="render"))
    done = _task("completed", b'"page 1"')
    assert queued.plan_task(cmd, done, stored=None) == [
        StoreKeyed("plan.keyed_render", "k1", b'"page 1"')
    ]
    [own] = queued.plan_task(cmd, done, stored=b'"page 1"')
    assert "reused" not in data(own)
    [other] = queued.plan_task(cmd, done, stored=b'"earlier"')  # a concurrent completion won
    assert data(other)["result"] == "earlier" and data(other)["reused"] is True


def test_a_keyed_queued_step_with_a_stored_result_is_not_dispatched() -> None:
    cmd = the_command(live(keyed_page.fn, 1))
    [event] = queued.plan_dispatch(cmd, stored=b'"cached"')
    assert types([event]) == [EventType.STEP_COMPLETED]
    assert data(event)["reused"] is True and data(event)["result"] == "cached"


# --- the run's end ------------------------------------------------------------------------


def _end(outcome: Outcome, **kw: Any) -> list[Any]:
    args: dict[str, Any] = {
        "open_children": (),
        "cancel_requested": False,
        "cancel_delivered": False,
        "version": "2",
    }
    args.update(kw)
    return ending.plan_end(outcome, run_record("r1"), **args)


def test_a_completed_workflow_plans_run_completed_and_finish() -> None:
    event, finish = _end(Outcome("completed", result=b"42"))
    assert types([event]) == [EventType.RUN_COMPLETED] and data(event) == {"result": 42}
    assert finish == Finish(RunState.COMPLETED, result=b"42")


def test_a_failed_workflow_plans_run_failed_with_the_error() -> None:
    error = ValueError("bad")
    event, finish, report = _end(Outcome("failed", error=error))
    assert types([event]) == [EventType.RUN_FAILED]
    assert isinstance(finish, Finish) and finish.state is RunState.FAILED
    assert msgspec.json.decode(finish.error or b"")["type"] == "builtins.ValueError"
    assert data(event)["error"] == msgspec.json.decode(finish.error or b"")
    assert report == ReportFailed(error)  # logged once the finish is written


def test_a_run_with_open_waited_children_suspends_until_they_end() -> None:
    planned = _end(Outcome("completed", result=b"1"), open_children={"k1", "k2"})
    assert planned == [Suspend(None, wake_on_children=frozenset({"k1", "k2"}))]


def test_a_run_asked_to_cancel_does_not_wait_for_its_children() -> None:
    planned = _end(Outcome("completed"), open_children={"k1"}, cancel_requested=True)
    assert types(planned) == [EventType.RUN_CANCELLED, Finish]


def test_continue_as_new_commits_first_then_switches_to_the_successor() -> None:
    commit, event, cont = _end(Outcome("continued", result=b"[3]"))
    assert commit == Commit()
    assert data(event) == {"continued_to": "r1/continue:1", "version": "2", "input": [3]}
    assert isinstance(cont, Continue)
    assert (cont.successor.run_id, cont.successor.version, cont.successor.generation) == (
        "r1/continue:1",
        "2",
        1,
    )


# --- one pass -------------------------------------------------------------------------------

SETTINGS = Settings(inline_wait=1.0, max_child_depth=16)


def test_a_pass_that_resolves_a_command_plans_again_before_starting_anything() -> None:
    ex = live(fan.fn)
    step, timer, long_timer = ex.pending()
    plan = plan_turn(ex.pending(), (), Reads(now=100.0), run_record(), SETTINGS)
    # sleep(0) is started and fired at once: progress; the dispatch waits for the next pass.
    assert plan.progressed and plan.rows == [] and plan.work == [] and plan.wake == []
    assert [types(group) for group in plan.journal] == [
        [EventType.TIMER_STARTED, EventType.TIMER_FIRED],
        [EventType.TIMER_STARTED],
    ]
    commands = [group[0].command for group in plan.journal]  # type: ignore[union-attr]
    assert commands == [timer, long_timer] and step not in commands


def test_a_settled_pass_records_dispatches_last_with_one_write() -> None:
    ex = live(fan.fn)
    step, timer, long_timer = ex.pending()
    ex.record(timer, TimerStarted(duration=0, fire_at=100.0))
    ex.record(timer, TimerFired())
    plan = plan_turn(ex.pending(), (), Reads(now=100.0), run_record(), SETTINGS)
    assert not plan.progressed
    assert types(plan.journal[0]) == [EventType.TIMER_STARTED]
    assert plan.journal[0][0].command is long_timer  # type: ignore[union-attr]
    assert types(plan.rows) == [EventType.STEP_DISPATCHED, Dispatch]
    assert plan.rows[0].command is step  # type: ignore[union-attr]
    assert plan.wake == [WakeAt(160.0)]


def test_a_second_wait_for_the_same_signal_name_waits_for_the_next_pass() -> None:
    ex = live(two_approvals.fn)
    first, second = ex.pending()
    signal = SignalRecord(1, "r1", "approve", b"1", 0.0)
    reads = Reads(now=100.0, signals={"approve": signal})
    plan = plan_turn(ex.pending(), (), reads, run_record(), SETTINGS)
    assert plan.progressed
    assert [types(g) for g in plan.journal] == [[EventType.SIGNAL_RECEIVED, ConsumeSignal]]
    assert plan.journal[0][0].command is first  # type: ignore[union-attr]
    # The second wait is not even noted as awaited: the next pass reads the mailbox again.
    assert [a for g in plan.journal for a in g if getattr(a, "command", None) is second] == []


def test_commands_in_flight_are_not_planned() -> None:
    ex = live(one_step.fn, 1)
    plan = plan_turn(ex.pending(), {the_command(ex).key}, Reads(100.0), run_record(), SETTINGS)
    assert plan.journal == [] and plan.work == [] and not plan.progressed


def test_the_suspend_wakes_the_run_at_the_earliest_wake_up() -> None:
    suspend = suspension(
        [WakeAt(50.0), WakeAt(float("inf")), WakeOnSignal("go"), WakeOnTask("step:a#0"),
         WakeOnChild("c"), WakeAt(20.0)],
        cancel_delivered=True,
    )  # fmt: skip
    assert suspend == Suspend(
        20.0,
        wake_on_signals=frozenset({"go"}),
        wake_on_tasks=frozenset({"step:a#0"}),
        wake_on_children=frozenset({"c"}),
        cancel_delivered=True,
    )
    assert suspension([], cancel_delivered=False, due_at=7.0).wake_at == 7.0


def test_an_ended_attempt_records_its_start_and_worker_when_given() -> None:
    cmd = the_command(live(one_step.fn, 4))
    ok = steps.plan_attempt_ended(
        cmd, 1, steps.Ended(value=8), 0.0, 0.5, started_at=12.5, worker="w-1"
    )
    assert data(ok[0])["started_at"] == 12.5 and data(ok[0])["worker"] == "w-1"
    ended = steps.Ended(error=ConnectionError("down"))
    _, retry = steps.plan_attempt_ended(cmd, 1, ended, 1000.0, 0.5, started_at=999.0, worker="w")
    assert (data(retry)["started_at"], data(retry)["worker"]) == (999.0, "w")
    _, failed = steps.plan_attempt_ended(cmd, 3, ended, 1000.0, 0.5, started_at=998.0, worker="w")
    assert (data(failed)["started_at"], data(failed)["worker"]) == (998.0, "w")
    # Not given (as by older workers): left out of the data, so old bytes stay the same.
    [plain] = steps.plan_attempt_ended(cmd, 1, steps.Ended(value=8), 0.0, 0.5)
    assert "started_at" not in data(plain) and "worker" not in data(plain)
