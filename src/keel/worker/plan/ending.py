"""The run's end: complete, fail, cancel, wait for children, or continue as new.

Continue-as-new: the workflow raised :class:`keel.errors.ContinueAsNew` with its
successor's encoded input. ``run_continued`` is journaled and one fenced write
(:class:`~keel.worker.actions.Continue`) ends the run ``continued`` and creates
its successor: the same workflow at the version that is *current* in this
worker, an empty journal, the new input, the same chain id and parent. A crash
before the commit leaves the run to the next lease holder, whose replay asks
for the same successor; a crash after it leaves a run that has ended. Results
the last turn journaled are committed just before the switch, in a write of
their own, so that a crash at the switch never runs a completed step again. The
successor's id is derived from the chain id and its generation, so no retry can
create a second one.
"""

from __future__ import annotations

from collections.abc import Collection

import msgspec

from keel.core.commands import Outcome
from keel.core.events import (
    EventType,
    RunCancelled,
    RunCompleted,
    RunContinued,
    encode_data,
    run_failed,
    run_started,
)
from keel.core.states import RunState
from keel.errors import KeelError
from keel.store.base import NewEvent, NewRun, RunRecord
from keel.worker.actions import (
    Action,
    Commit,
    Continue,
    Finish,
    RecordEvent,
    ReportFailed,
    Suspend,
)


def plan_end(
    outcome: Outcome,
    run: RunRecord,
    *,
    open_children: Collection[str],
    cancel_requested: bool,
    cancel_delivered: bool,
    version: str,
    traceparent: str | None = None,
) -> list[Action]:
    """How to end a run whose workflow has ended with ``outcome``.

    ``open_children``: its ``parent_close="wait"`` children that have not ended
    (read only for an outcome other than cancelled): the run ends only after
    they have, unless it is asked to cancel meanwhile, when it ends cancelled.
    A cancelled run does not wait (finishing cancels them). ``cancel_delivered``:
    the workflow got the cancel request (see :class:`Suspend`). ``version``:
    the workflow version current in this worker, for a successor, whose
    spans continue ``traceparent`` (the run's own trace context).
    """
    if outcome.status != "cancelled" and open_children:
        if not cancel_requested:
            waiting = frozenset(open_children)
            return [Suspend(None, wake_on_children=waiting, cancel_delivered=cancel_delivered)]
        outcome = Outcome("cancelled")
    if outcome.status == "continued":
        data = outcome.result if outcome.result is not None else b"{}"
        successor = successor_of(run, version, data, traceparent)
        continued = RunContinued(
            continued_to=successor.run_id, version=version, input=msgspec.Raw(data)
        )
        # Two writes: what the turn journaled (step results) commits first, so a
        # crash at the switch never repeats a completed step; then the switch.
        return [
            Commit(),
            RecordEvent(None, continued),
            Continue(successor),
        ]
    if outcome.status == "completed":
        result = outcome.result
        return [
            RecordEvent(None, RunCompleted(result=msgspec.Raw(result or b"null"))),
            Finish(RunState.COMPLETED, result=result),
        ]
    if outcome.status == "cancelled":
        return [
            RecordEvent(None, RunCancelled(reason="cancel requested")),
            Finish(RunState.CANCELLED),
        ]
    failure = outcome.error or KeelError("unknown failure")
    event, error = run_failed(failure)
    return [RecordEvent(None, event), Finish(RunState.FAILED, error=error), ReportFailed(failure)]


def failure(exc: BaseException) -> tuple[NewEvent, Finish]:
    """The ``run_failed`` event (as stored) and the finish of a run that fails
    with ``exc`` outside the workflow's code (nothing to feed the event to)."""
    event, error = run_failed(exc)
    failed = NewEvent(EventType.RUN_FAILED.value, None, encode_data(event))
    return failed, Finish(RunState.FAILED, error=error)


def successor_id(chain_id: str, generation: int) -> str:
    """The run id of generation ``generation`` of a chain (the first run is generation 0)."""
    return f"{chain_id}/continue:{generation}"


def successor_of(
    run: RunRecord, version: str, data: bytes, traceparent: str | None = None
) -> NewRun:
    """The run that continues ``run`` with input ``data`` at ``version``."""
    generation = run.generation + 1
    run_id = successor_id(run.chain, generation)
    first = run_started(
        run.workflow,
        version,
        data,
        chain_id=run.chain,
        generation=generation,
        continued_from=run.run_id,
        parent_run_id=run.parent_run_id,
        traceparent=traceparent,
    )
    started = NewEvent(EventType.RUN_STARTED.value, None, encode_data(first))
    return NewRun(
        run_id,
        run.workflow,
        version,
        data,
        started,
        parent_run_id=run.parent_run_id,
        parent_close=run.parent_close,
        depth=run.depth,
        chain_id=run.chain,
        generation=generation,
    )
