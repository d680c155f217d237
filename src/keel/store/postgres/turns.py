"""The one statement that commits a turn (see ``commit`` in queries.sql): the
variant of its parts, and its parameters."""

from __future__ import annotations

from typing import Any

from keel.core.states import RunState
from keel.store._checks import check_children, check_end, check_tasks
from keel.store.base import Lease, NewRun
from keel.store.ports import Continue, Finish, Suspend, Turn
from keel.store.postgres._sql import Q


def fence(lease: Lease) -> dict[str, Any]:
    """The parameters of the ``fence`` piece."""
    return {"run_id": lease.run_id, "token": lease.token, "owner": lease.owner}


def turn_statement(lease: Lease, turn: Turn, channel: str) -> tuple[str, dict[str, Any]]:
    """The ``commit`` variant that records ``turn`` for ``lease``, and its parameters.
    A turn refused by the checks every store makes raises here, before any write."""
    events, end = turn.events, turn.end
    check_end(lease.run_id, end)
    successor = end.successor if isinstance(end, Continue) else None
    params: dict[str, Any] = {
        "run_id": lease.run_id,
        "token": lease.token,
        "owner": lease.owner,
        "first_seq": turn.first_seq,
        "n": len(events),
        "signal_id": turn.consume_signal,
        "successor": None if successor is None else successor.run_id,
        "channel": channel,
    }
    if len(events) == 1:  # the hot path: scalars, cheaper to send than three arrays
        [e] = events
        tags = ["one"]
        params["type"], params["command"], params["data"] = e.type, e.command, e.data
    else:
        tags = ["many"]
        params["types"] = [e.type for e in events]
        params["commands"] = [e.command for e in events]
        params["datas"] = [e.data for e in events]
    if turn.consume_signal is not None:
        tags.append("signal")
    if turn.children or successor is not None:
        born: list[tuple[NewRun, str | None]] = [(c, lease.run_id) for c in turn.children]
        if successor is not None:
            born.append((successor, successor.parent_run_id))
        check_children([r for r, _ in born])
        tags.append("born")
        params |= _born(born)
    if turn.tasks:
        check_tasks(lease.run_id, turn.tasks)
        tags.append("tasks")
        params |= _tasks(turn)
    if isinstance(end, Suspend):
        tags.append("suspend")
        params |= {
            "state": RunState.SUSPENDED.value,
            "wake_at": end.wake_at,
            "wake_signals": sorted(end.wake_on_signals),
            "wake_tasks": sorted(end.wake_on_tasks),
            "wake_children": sorted(end.wake_on_children),
            "cancel_delivered": end.cancel_delivered,
        }
    elif isinstance(end, Finish):
        tags.append("finish")
        params |= {"state": RunState(end.state).value, "result": end.result, "error": end.error}
    elif successor is not None:
        tags.append("continue")
        params["state"] = RunState.CONTINUED.value
    # What the turn tells listeners, on commit: one text (an array costs more to send).
    notify = [_NOTIFY[tag] for tag in tags if tag in _NOTIFY]
    if notify:
        tags.append("notify")
        params["notify"] = ",".join(dict.fromkeys(notify))
    return Q.sql("commit", *tags), params


#: The NOTIFY payload of each part of a turn that has one (see _listener.py).
_NOTIFY = {
    "born": "created",
    "tasks": "dispatched",
    "suspend": "suspended",
    "finish": "finished",
}


def _born(born: list[tuple[NewRun, str | None]]) -> dict[str, Any]:
    """The arrays of the runs a turn creates (children, a successor), with their parents."""
    return {
        "run_ids": [r.run_id for r, _ in born],
        "workflows": [r.workflow for r, _ in born],
        "versions": [r.version for r, _ in born],
        "inputs": [r.input for r, _ in born],
        "parent_run_ids": [parent for _, parent in born],
        "parent_closes": [r.parent_close for r, _ in born],
        "depths": [r.depth for r, _ in born],
        "chain_ids": [r.chain_id for r, _ in born],
        "generations": [r.generation for r, _ in born],
        "started_types": [r.started.type for r, _ in born],
        "started_commands": [r.started.command for r, _ in born],
        "started_datas": [r.started.data for r, _ in born],
    }


def _tasks(turn: Turn) -> dict[str, Any]:
    return {
        "task_commands": [t.command for t in turn.tasks],
        "steps": [t.step for t in turn.tasks],
        "queues": [t.queue for t in turn.tasks],
        "priorities": [t.priority for t in turn.tasks],
        "args": [t.args for t in turn.tasks],
        "max_attempts": [t.max_attempts for t in turn.tasks],
    }
