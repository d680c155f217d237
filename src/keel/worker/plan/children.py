"""Child runs, as the parent plans them: start one, or journal its outcome.

Not started yet: if it cannot start (too deep, its run id taken) ``child_failed``
is journaled at once; otherwise ``child_started`` is recorded and the child run
is created by the same fenced write (:class:`~keel.worker.actions.StartChildren`),
so a crash leaves either both or neither. Started: once the child's run row
(the latest of its continue-as-new chain) has ended, its outcome is journaled
under the parent's lease; until then the parent suspends with a
:class:`~keel.worker.actions.WakeOnChild`, and the child's end wakes it in the
same transaction.
"""

from __future__ import annotations

from collections.abc import Collection

import msgspec

from keel.core import codec
from keel.core.commands import Command
from keel.core.events import (
    ChildCancelled,
    ChildCompleted,
    ChildFailed,
    ChildStarted,
    ErrorInfo,
    EventType,
    encode_data,
    run_started,
)
from keel.core.states import RunState
from keel.store.base import NewEvent, NewRun, RunRecord
from keel.worker.actions import Planned, RecordEvent, StartChildren, WakeOnChild
from keel.workflow.children import ChildSpec

#: How deep children may nest by default (a run started by a client has depth 0).
MAX_CHILD_DEPTH = 16


def child_spec(cmd: Command) -> ChildSpec:
    spec = cmd.target
    assert isinstance(spec, ChildSpec), f"{cmd.key} has no child spec"
    return spec


def plan_start(
    cmd: Command,
    parent: RunRecord,
    max_depth: int,
    taken: bool,
    starting: Collection[str],
    traceparent: str | None = None,
) -> list[Planned]:
    """A child not started yet. ``taken``: a run with its id exists (read
    before this turn; one created after that read makes the start's write fail
    with ``RunExistsError``, nothing written, and the next turn finds it);
    ``starting``: the ids of the children this turn starts before it;
    ``traceparent``: the trace context the child's spans continue."""
    spec = child_spec(cmd)
    if parent.depth + 1 > max_depth:
        return _refused(
            cmd,
            "keel.errors.ChildWorkflowError",
            f"maximum child workflow depth {max_depth} exceeded: run {parent.run_id!r} is at "
            f"depth {parent.depth} and cannot start child {spec.run_id!r}",
        )
    if taken:
        return _refused(
            cmd,
            "keel.errors.RunExistsError",
            f"cannot start child workflow {spec.workflow!r}: run id {spec.run_id!r} is taken",
        )
    if spec.run_id in starting:
        return _refused(
            cmd,
            "keel.errors.RunExistsError",
            f"cannot start child workflow {spec.workflow!r}: run id "
            f"{spec.run_id!r} is taken by another child started at the same time",
        )
    assert cmd.args is not None  # child commands carry their encoded input
    event = ChildStarted(
        child_run_id=spec.run_id,
        workflow=spec.workflow,
        parent_close=spec.parent_close,
        args_hash=cmd.args_hash,
    )
    first = run_started(
        spec.workflow, spec.version, cmd.args, parent_run_id=parent.run_id, traceparent=traceparent
    )
    started = NewEvent(EventType.RUN_STARTED.value, None, encode_data(first))
    child = NewRun(
        spec.run_id,
        spec.workflow,
        spec.version,
        cmd.args,
        started,
        parent_run_id=parent.run_id,
        parent_close=spec.parent_close,
        depth=parent.depth + 1,
    )
    return [RecordEvent(cmd, event), StartChildren((child,), (spec.definition,))]


def plan_outcome(cmd: Command, child: RunRecord | None) -> list[Planned]:
    """A started child: journal its outcome once its run (``child``, the latest
    of its chain; ``None``: missing) has ended, else wait for it to end."""
    run_id = cmd.child_run_id or child_spec(cmd).run_id
    if child is None:
        # Journaled as started but gone (deleted by hand?): fail rather than wait forever.
        gone = {
            "type": "keel.errors.RunNotFoundError",
            "message": f"child run {run_id!r} is missing from the store",
            "traceback": "",
        }
        return [RecordEvent(cmd, ChildFailed(child_run_id=run_id, error=gone))]
    if child.state is RunState.COMPLETED:
        result = child.result if child.result is not None else b"null"
        return [RecordEvent(cmd, ChildCompleted(child_run_id=run_id, result=msgspec.Raw(result)))]
    if child.state is RunState.FAILED:
        return [RecordEvent(cmd, ChildFailed(child_run_id=run_id, error=_error_of(child)))]
    if child.state is RunState.CANCELLED:
        return [RecordEvent(cmd, ChildCancelled(child_run_id=run_id))]
    if child.state is RunState.TERMINATED:
        # An operator ended it without a result: the parent sees a failed child.
        terminated = {
            "type": "keel.errors.RunTerminatedError",
            "message": f"child run {child.run_id!r} was terminated by an operator",
            "traceback": "",
        }
        return [RecordEvent(cmd, ChildFailed(child_run_id=run_id, error=terminated))]
    return [WakeOnChild(child.run_id)]  # (a chain's latest run: the one whose end wakes us)


def _refused(cmd: Command, error_type: str, message: str) -> list[Planned]:
    """Journal ``child_failed`` for a child that cannot start: no child run."""
    refused = ChildFailed(
        child_run_id=child_spec(cmd).run_id,
        started=False,
        error={"type": error_type, "message": message, "traceback": ""},
        args_hash=cmd.args_hash,
    )
    return [RecordEvent(cmd, refused)]


def _error_of(child: RunRecord) -> ErrorInfo:
    fallback = {"type": "keel.errors.KeelError", "message": "the child run failed"}
    if child.error is None:
        return fallback
    try:
        info = codec.decode(child.error)
    except Exception:
        return {**fallback, "message": child.error.decode("utf-8", "replace")}
    return info if isinstance(info, dict) else {**fallback, "message": str(info)}
