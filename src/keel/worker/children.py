"""Child runs, as the parent's driver sees them: start them, journal their outcomes.

A child command is planned in three ways. Not started yet: if it cannot start
(too deep, its run id taken) ``child_failed`` is journaled at once; otherwise
``child_started`` is recorded and the child run is created by the same fenced
commit (a :class:`~keel.store.ports.Turn` with ``children``), so a crash leaves
either both or neither. Started: the child run row is read; once it has ended, its outcome
is journaled under the parent's lease; until then the parent suspends with
``wake_on_children``, and the child's end wakes it in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import msgspec

from keel.core import codec
from keel.core.commands import Command
from keel.core.events import (
    ChildCancelled,
    ChildCompleted,
    ChildFailed,
    ChildStarted,
    CommandKind,
    ErrorInfo,
    EventType,
    encode_data,
    run_started,
)
from keel.core.replay import Execution
from keel.core.states import RunState
from keel.store.base import NewEvent, NewRun, RunRecord
from keel.store.ports import Store
from keel.workflow.children import ChildSpec

if TYPE_CHECKING:
    from keel.worker.worker import Worker

#: How deep children may nest by default (a run started by a client has depth 0).
MAX_CHILD_DEPTH = 16


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a child cannot start: recorded as ``child_failed`` without a child run."""

    error_type: str
    message: str


async def plan_child(
    store: Store,
    parent: RunRecord,
    ex: Execution,
    cmd: Command,
    worker: Worker,
    starting: set[str],
    kids: dict[str, RunRecord],
) -> Literal["progressed", "start", "running"]:
    """Plan a child command: ``"progressed"`` (an event was journaled), ``"start"``
    (create the child with this plan's write; its id is added to ``starting``),
    or ``"running"`` (wait for it). ``kids``: the started children's rows."""
    if cmd.child_run_id is None:
        refusal = await refuse_start(store, parent, cmd, worker.max_child_depth)
        if refusal is None and _spec(cmd).run_id in starting:
            refusal = Refusal(
                "keel.errors.RunExistsError",
                f"cannot start child workflow {_spec(cmd).workflow!r}: run id "
                f"{_spec(cmd).run_id!r} is taken by another child started at the same time",
            )
        if refusal is None:
            starting.add(_spec(cmd).run_id)
            return "start"
        record_refusal(ex, cmd, refusal)
        return "progressed"
    if record_outcome(ex, cmd, kids.get(cmd.child_run_id)):
        return "progressed"
    return "running"


async def started_children(store: Store, ex: Execution) -> dict[str, RunRecord]:
    """The rows of the started children whose outcome is not journaled yet."""
    ids = [
        c.child_run_id
        for c in ex.pending()
        if c.id.kind is CommandKind.CHILD and c.child_run_id is not None
    ]
    return await follow_chains(store, await store.reads.get_runs(ids)) if ids else {}


async def follow_chains(store: Store, rows: dict[str, RunRecord]) -> dict[str, RunRecord]:
    """``rows`` with each run that continued-as-new replaced by the latest run of its
    chain (keyed by the id asked for): a child's outcome is its chain's outcome."""
    rows = dict(rows)
    while True:
        moved = {
            run_id: rec.continued_to
            for run_id, rec in rows.items()
            if rec.state is RunState.CONTINUED and rec.continued_to is not None
        }
        if not moved:
            return rows
        tips = await store.reads.get_runs(set(moved.values()))
        if not any(tip in tips for tip in moved.values()):
            return rows  # a successor is missing: leave the run as it is
        for run_id, tip in moved.items():
            if tip in tips:
                rows[run_id] = tips[tip]


async def refuse_start(
    store: Store, parent: RunRecord, cmd: Command, max_depth: int
) -> Refusal | None:
    """A reason the child of ``cmd`` cannot be started, or ``None``."""
    spec = _spec(cmd)
    if parent.depth + 1 > max_depth:
        return Refusal(
            "keel.errors.ChildWorkflowError",
            f"maximum child workflow depth {max_depth} exceeded: run {parent.run_id!r} is at "
            f"depth {parent.depth} and cannot start child {spec.run_id!r}",
        )
    # Checked before the start is journaled; a run created between this read
    # and the write of the children fails (RunExistsError, nothing written),
    # and the next turn finds it here.
    if await store.reads.get_run(spec.run_id) is not None:
        return Refusal(
            "keel.errors.RunExistsError",
            f"cannot start child workflow {spec.workflow!r}: run id {spec.run_id!r} is taken",
        )
    return None


def record_refusal(ex: Execution, cmd: Command, refusal: Refusal) -> None:
    spec = _spec(cmd)
    ex.record(
        cmd,
        ChildFailed(
            child_run_id=spec.run_id,
            started=False,
            error={"type": refusal.error_type, "message": refusal.message, "traceback": ""},
            args_hash=cmd.args_hash,
        ),
    )


def record_start(ex: Execution, cmd: Command, parent: RunRecord) -> NewRun:
    """Journal ``child_started`` for ``cmd``; return the child run to create with it."""
    spec = _spec(cmd)
    assert cmd.args is not None  # child commands carry their encoded input
    ex.record(
        cmd,
        ChildStarted(
            child_run_id=spec.run_id,
            workflow=spec.workflow,
            parent_close=spec.parent_close,
            args_hash=cmd.args_hash,
        ),
    )
    first = run_started(spec.workflow, spec.version, cmd.args, parent_run_id=parent.run_id)
    started = NewEvent(EventType.RUN_STARTED.value, None, encode_data(first))
    return NewRun(
        spec.run_id,
        spec.workflow,
        spec.version,
        cmd.args,
        started,
        parent_run_id=parent.run_id,
        parent_close=spec.parent_close,
        depth=parent.depth + 1,
    )


def record_outcome(ex: Execution, cmd: Command, child: RunRecord | None) -> bool:
    """Journal the child's outcome if it has ended; ``False`` while it runs."""
    run_id = cmd.child_run_id or _spec(cmd).run_id
    if child is None:
        # Journaled as started but gone (deleted by hand?): fail rather than wait forever.
        gone = {
            "type": "keel.errors.RunNotFoundError",
            "message": f"child run {run_id!r} is missing from the store",
            "traceback": "",
        }
        ex.record(cmd, ChildFailed(child_run_id=run_id, error=gone))
        return True
    if child.state is RunState.COMPLETED:
        result = child.result if child.result is not None else b"null"
        ex.record(cmd, ChildCompleted(child_run_id=run_id, result=msgspec.Raw(result)))
    elif child.state is RunState.FAILED:
        ex.record(cmd, ChildFailed(child_run_id=run_id, error=_error_of(child)))
    elif child.state is RunState.CANCELLED:
        ex.record(cmd, ChildCancelled(child_run_id=run_id))
    else:
        return False
    return True


async def open_waited_children(store: Store, ex: Execution) -> set[str]:
    """Run ids of this run's ``parent_close="wait"`` children that have not ended.

    Read from the store: once the workflow has returned, its journal takes no
    more child events (replay would not expect them).
    """
    pending = {c.key for c in ex.pending()}
    waited = [
        cmd.child_run_id
        for cmd in ex.children()
        if cmd.key in pending
        and cmd.child_run_id is not None
        and isinstance(cmd.target, ChildSpec)
        and cmd.target.parent_close == "wait"
    ]
    rows = await follow_chains(store, await store.reads.get_runs(waited)) if waited else {}
    return {rec.run_id for rec in rows.values() if not rec.state.is_terminal}


def _spec(cmd: Command) -> ChildSpec:
    spec = cmd.target
    assert isinstance(spec, ChildSpec), f"{cmd.key} has no child spec"
    return spec


def _error_of(child: RunRecord) -> ErrorInfo:
    fallback = {"type": "keel.errors.KeelError", "message": "the child run failed"}
    if child.error is None:
        return fallback
    try:
        info = codec.decode(child.error)
    except Exception:
        return {**fallback, "message": child.error.decode("utf-8", "replace")}
    return info if isinstance(info, dict) else {**fallback, "message": str(info)}
