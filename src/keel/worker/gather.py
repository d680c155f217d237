"""The store reads a pass's planners need, made before it is planned.

Reads only: the planners (:mod:`keel.worker.plan`) get these as data, and
every write is :mod:`keel.worker.effects`'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from keel.core.commands import Command
from keel.core.events import CommandKind
from keel.core.replay import Execution
from keel.core.states import RunState
from keel.store.base import RunRecord, SignalRecord, TaskRecord
from keel.store.ports import Store
from keel.worker.plan.children import child_spec
from keel.worker.plan.queued import is_queued
from keel.worker.plan.turn import Reads
from keel.workflow.children import ChildSpec


async def gather_turn(store: Store, run_id: str, pending: Sequence[Command]) -> Reads:
    """The store's clock, and for the pending commands: the task row of each
    dispatched step (and, once completed, the result stored under its
    idempotency key), the result stored under a queued step's key, the oldest
    signal of each name waited on, and the runs child commands name (one read
    for them all). Inline steps, side effects and timers need nothing (and
    only they are ever in flight in this worker)."""
    now = await store.now()
    tasks: dict[str, TaskRecord | None] = {}
    keyed: dict[str, bytes] = {}
    names: list[str] = []
    child_ids: list[str] = []
    for cmd in pending:
        kind = cmd.id.kind
        if kind is CommandKind.STEP:
            key = cmd.idempotency_key
            task = None
            if cmd.dispatched:
                task = tasks[cmd.key] = await store.tasks.get(run_id, cmd.key)
                if key is None or task is None or task.state != "completed":
                    continue
            elif key is None or not is_queued(cmd):
                continue
            max_age = cmd.target.key_max_age
            stored = await store.keys.get(cmd.id.name, key, max_age)
            if stored is None and task is not None and max_age is not None:
                # The task's own result, stored under the key by an earlier
                # turn, may have outlived a TTL shorter than a turn: it is still
                # this step's result (else each turn would store it again).
                own = task.result if task.result is not None else b"null"
                if await store.keys.get(cmd.id.name, key) == own:
                    stored = own
            if stored is not None:
                keyed[cmd.key] = stored
        elif kind is CommandKind.SIGNAL:
            names.append(cmd.id.name)
        elif kind is CommandKind.CHILD:
            child_ids.append(cmd.child_run_id or child_spec(cmd).run_id)
    signals: dict[str, SignalRecord] = {}
    for name in dict.fromkeys(names) if names else ():
        signal = await store.mailbox.next(run_id, name)
        if signal is not None:
            signals[name] = signal
    children: dict[str, RunRecord | None] = {}
    if child_ids:
        rows = await follow_chains(store, await store.reads.get_runs(child_ids))
        children = {run_id: rows.get(run_id) for run_id in child_ids}
    return Reads(now, tasks, keyed, signals, children)


async def open_children(store: Store, ex: Execution) -> set[str]:
    """Run ids of the run's ``parent_close="wait"`` children that have not ended.

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


async def follow_chains(store: Store, rows: Mapping[str, RunRecord]) -> dict[str, RunRecord]:
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
