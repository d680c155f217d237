"""The crash tester's own detector of Keel's promise "a step whose end is
journaled never runs again": Keel keeps the promise, so no workflow can make
it fire; it is driven here with the writes and step executions it watches."""

from __future__ import annotations

import msgspec

from keel.core.events import EventType, StepAttemptFailed
from keel.store.base import Lease, NewEvent
from keel.store.ports import Turn
from keel.testing.crash_counting import Scene
from keel.testing.crash_store import Landed, Write
from keel.workflow.context import StepInfo, _step_info

LEASE = Lease("r-1", "first", 1, 0.0)


def commit(landed: Landed, n: int, *events: NewEvent) -> None:
    write = Write(n, "runs.commit", "r-1", "...")
    landed.record("first", write, (LEASE, Turn(n, events)), None)


def execute(scene: Scene, step: str, command: str, attempt: int) -> None:
    token = _step_info.set(StepInfo("r-1", step, attempt, f"r-1:{command}"))
    try:
        scene.end(scene.begin("second"))
    finally:
        _step_info.reset(token)


def test_a_step_run_after_its_completion_was_journaled_is_a_failure() -> None:
    landed = Landed()
    scene = Scene(landed, None)
    execute(scene, "pay", "step:pay#0", 1)  # ran; then the worker died before journaling it
    execute(scene, "pay", "step:pay#0", 1)  # at-least-once: not a failure
    assert scene.failures() == []
    commit(landed, 1, NewEvent(EventType.STEP_COMPLETED.value, "step:pay#0", b"{}"))
    execute(scene, "pay", "step:pay#0", 1)  # after write 1 journaled it: broken
    execute(scene, "ship", "step:ship#0", 1)  # another command: fine
    [failure] = scene.failures()
    assert failure.check == "rerun"
    assert (failure.step, failure.attempt, failure.execution) == ("pay", 1, 3)
    assert "ran although write 1 had journaled its end" in failure.message
    assert [e.repeat for e in scene.executions] == [False, True, True, False]


def test_an_attempt_run_again_after_its_failure_was_journaled_is_a_failure() -> None:
    landed = Landed()
    scene = Scene(landed, None)
    failed = msgspec.json.encode(StepAttemptFailed(attempt=1))
    commit(landed, 1, NewEvent(EventType.STEP_ATTEMPT_FAILED.value, "step:pay#0", failed))
    execute(scene, "pay", "step:pay#0", 2)  # the retry: fine
    assert scene.failures() == []
    execute(scene, "pay", "step:pay#0", 1)  # attempt 1 again: broken
    [failure] = scene.failures()
    assert (failure.check, failure.attempt) == ("rerun", 1)


def test_the_first_broken_invariant_names_the_execution_after_which_it_broke() -> None:
    ledger: list[str] = []
    scene = Scene(Landed(), lambda: len(ledger) < 2)
    ledger.append("charge")
    execute(scene, "pay", "step:pay#0", 1)
    ledger.append("charge")
    execute(scene, "pay", "step:pay#0", 1)
    execute(scene, "ship", "step:ship#0", 1)  # still broken: only the first is reported
    [failure] = scene.failures()
    assert (failure.check, failure.step, failure.execution) == ("invariant", "pay", 2)
    assert "the invariant returned False" in failure.message
