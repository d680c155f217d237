"""Each node of a graph run as its journal tells it: a pure fold, no user code.

The journal holds what nodes did (their steps' outcomes, the approvals'
signals, the children's ends); what the interpreter decided without a write
(skipped, blocked) is decided again here by the same rules
(:class:`keel.graph.engine.GraphRun`), from those outcomes and the graph's
structure alone. So the view cannot drift from what the run itself decided.

Statuses: ``pending`` (waiting for its parents), ``running`` (its parents
allow it; nothing journaled yet, or a map with items still open),
``retrying`` (an attempt failed, another is due), ``dispatched`` (on a
queue), ``waiting_for_approval``, ``completed``, ``failed``, ``skipped``,
``blocked``. A ``completed`` node whose result came from the cache
(``cache=True``; a map: every item's) is ``cached`` as well.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from keel.graph.engine import APPROVAL_SIGNAL, GraphRun, Outcome, check_items, child_run_id
from keel.graph.graphdef import GraphDef
from keel.graph.model import Node, NodeError

NodeState = Literal[
    "pending",
    "running",
    "retrying",
    "dispatched",
    "waiting_for_approval",
    "completed",
    "failed",
    "skipped",
    "blocked",
]


class JournalEvent(Protocol):
    """A decoded journal event (:class:`keel.HistoryEvent` is one)."""

    @property
    def seq(self) -> int: ...
    @property
    def type(self) -> str: ...
    @property
    def command(self) -> str | None: ...
    @property
    def data(self) -> dict[str, Any]: ...
    @property
    def created_at(self) -> datetime: ...


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """One node of a graph run."""

    node: str
    kind: str
    status: NodeState
    output: Any = None  # decoded JSON, as journaled
    label: str | None = None  # a route's or approval's choice
    error: dict[str, Any] | None = None
    attempts: int = 0  # attempts journaled (a map: over all its items)
    items: tuple[int, int] | None = None  # a map: (items ended, items in all)
    started_at: datetime | None = None  # first event of the node
    ended_at: datetime | None = None  # the event that ended it
    ended_seq: int | None = None  # its position: completion order
    commands: tuple[str, ...] = field(default=())  # the journal commands it wrote
    # Its step's arguments, decoded JSON ``{parameter: value}`` as journaled (a
    # map: one per item, in item order). ``None`` when not journaled: an older
    # journal, or arguments over the journal's cap, whose size ``input_size`` gives.
    input: Any = None
    input_size: int | None = None
    # Completed from the cache (``cache=True``) without running its body (a map:
    # every item was).
    cached: bool = False

    @property
    def shown(self) -> str:
        """The status as the CLI and the dashboard show it: with a route's or an
        approval's label, or marked as cached."""
        if self.label:
            return f"{self.status} ({self.label})"
        return f"{self.status} (cached)" if self.cached else self.status


def node_statuses(
    graph: GraphDef, run_id: str, journal: Iterable[JournalEvent]
) -> dict[str, NodeStatus]:
    """Every node of ``graph`` in the run ``run_id`` whose journal is ``journal``,
    in the graph's (topological) order."""
    events = list(journal)
    inputs: dict[str, Any] = {}
    by_command: dict[str, list[JournalEvent]] = {}
    for event in events:
        if event.type == "run_started":
            inputs = dict(event.data.get("input") or {})
        if event.command is not None:
            by_command.setdefault(event.command, []).append(event)
    children = {
        e.data.get("child_run_id"): e.command
        for e in events
        if e.type == "child_started" and e.command is not None
    }
    run = GraphRun(graph, {}, inputs)
    statuses: dict[str, NodeStatus] = {}
    for name, node in graph.nodes.items():
        found = _journaled(graph, node, run, run_id, by_command, children)
        if found is None:  # nothing journaled: what the rules say about it now
            verdict = run._verdict(node)
            if verdict in ("skip", "block"):
                run.outcomes[name] = Outcome("skipped" if verdict == "skip" else "blocked")
                state: NodeState = "skipped" if verdict == "skip" else "blocked"
            else:
                state = "running" if verdict == "run" else "pending"
            found = NodeStatus(name, node.kind, state)
        elif found.status in ("completed", "failed", "skipped"):
            run.outcomes[name] = _outcome(found)
        statuses[name] = found
    return statuses


def _outcome(status: NodeStatus) -> Outcome:
    if status.status == "failed":
        err = status.error or {}
        error = NodeError(
            status.node, str(err.get("type", "")), str(err.get("message", "")), status.attempts
        )
        return Outcome("failed", error=error)
    if status.status == "skipped":
        return Outcome("skipped")
    return Outcome("completed", status.output, label=status.label)


def _journaled(
    graph: GraphDef,
    node: Node,
    run: GraphRun,
    run_id: str,
    by_command: Mapping[str, list[JournalEvent]],
    children: Mapping[Any, str | None],
) -> NodeStatus | None:
    """The node's status from its own events; ``None`` if it has none."""
    step = f"step:{graph.name}.{node.name}"
    if node.kind == "approval":
        signal = APPROVAL_SIGNAL.format(node=node.name)
        return _approval(node, by_command.get(f"signal:{signal}#0", []))
    if node.kind == "child":
        command = children.get(child_run_id(run_id, node.name))
        return _child(node, by_command.get(command or "", []))
    if node.kind == "map":
        return _map(node, run, step, by_command)
    if node.kind == "rule":
        condition = by_command.get(f"{step}.condition#0", [])
        ended = _step(node, f"{step}.condition#0", condition)
        if ended is None or ended.status != "completed":
            return ended
        if not ended.output:
            return NodeStatus(
                node.name,
                node.kind,
                "skipped",
                started_at=ended.started_at,
                ended_at=ended.ended_at,
                ended_seq=ended.ended_seq,
                commands=ended.commands,
                input=ended.input,  # the condition's: the reaction did not run
                input_size=ended.input_size,
            )
    found = _step(node, f"{step}#0", by_command.get(f"{step}#0", []))
    if found is not None and node.kind == "route" and found.status == "completed":
        label = found.output if isinstance(found.output, str) else None
        followed = {e.label for n in graph.nodes.values() for e in n.after if e.parent == node.name}
        if label not in followed:  # the route failed itself: no edge follows the label
            return NodeStatus(
                node.name,
                node.kind,
                "failed",
                output=found.output,
                error={"type": "RouteError", "message": f"no edge follows {label!r}"},
                attempts=found.attempts,
                started_at=found.started_at,
                ended_at=found.ended_at,
                ended_seq=found.ended_seq,
                commands=found.commands,
                input=found.input,
                input_size=found.input_size,
            )
        return NodeStatus(**{**_fields(found), "label": label})
    return found


def _fields(status: NodeStatus) -> dict[str, Any]:
    return {name: getattr(status, name) for name in NodeStatus.__slots__}


def _step(node: Node, command: str, events: list[JournalEvent]) -> NodeStatus | None:
    """One step command's status, or ``None`` if it wrote nothing."""
    if not events:
        return None
    last = events[-1]
    attempts = sum(e.type in ("step_completed", "step_attempt_failed") for e in events)
    first = events[0].data  # a step's input is on its first event
    common: dict[str, Any] = {
        "node": node.name,
        "kind": node.kind,
        "attempts": attempts,
        "started_at": events[0].created_at,
        "commands": (command,),
        "input": first.get("input"),
        "input_size": first.get("input_size"),
    }
    if last.type == "step_completed":
        return NodeStatus(
            status="completed",
            output=last.data.get("result"),
            ended_at=last.created_at,
            ended_seq=last.seq,
            # A cached node's step reused the result stored under its cache key.
            cached=node.options.cache and last.data.get("reused") is True,
            **common,
        )
    if last.type == "step_failed":
        common["attempts"] = int(last.data.get("attempts") or attempts)
        return NodeStatus(
            status="failed",
            error=last.data.get("error"),
            ended_at=last.created_at,
            ended_seq=last.seq,
            **common,
        )
    if last.type == "step_attempt_failed":
        return NodeStatus(status="retrying", error=last.data.get("error"), **common)
    return NodeStatus(status="dispatched", **common)


def _approval(node: Node, events: list[JournalEvent]) -> NodeStatus | None:
    if not events:
        return None
    last = events[-1]
    common: dict[str, Any] = {
        "node": node.name,
        "kind": node.kind,
        "started_at": events[0].created_at,
        "commands": (last.command or "",),
    }
    if last.type == "signal_received":
        decision = last.data.get("payload")
        label = decision.get("decision") if isinstance(decision, dict) else None
        return NodeStatus(
            status="completed",
            output=decision,
            label=label,
            ended_at=last.created_at,
            ended_seq=last.seq,
            **common,
        )
    if last.type == "signal_timed_out":
        return NodeStatus(
            status="completed",
            output={"decision": "timeout"},
            label="timeout",
            ended_at=last.created_at,
            ended_seq=last.seq,
            **common,
        )
    return NodeStatus(status="waiting_for_approval", **common)


def _child(node: Node, events: list[JournalEvent]) -> NodeStatus | None:
    if not events:
        return None
    last = events[-1]
    common: dict[str, Any] = {
        "node": node.name,
        "kind": node.kind,
        "started_at": events[0].created_at,
        "commands": (last.command or "",),
    }
    if last.type == "child_completed":
        return NodeStatus(
            status="completed",
            output=last.data.get("result"),
            ended_at=last.created_at,
            ended_seq=last.seq,
            **common,
        )
    if last.type in ("child_failed", "child_cancelled"):
        error = last.data.get("error") or {"type": "ChildWorkflowCancelled", "message": ""}
        return NodeStatus(
            status="failed", error=error, ended_at=last.created_at, ended_seq=last.seq, **common
        )
    return NodeStatus(status="running", **common)


def _map(
    node: Node, run: GraphRun, step: str, by_command: Mapping[str, list[JournalEvent]]
) -> NodeStatus | None:
    over = node.over or ""
    source = run.effective(over) if over in run.graph.nodes else None
    items = source.value if source is not None else run.inputs.get(over)
    items_events = []
    index = 0
    while f"{step}#{index}" in by_command:
        items_events.append(by_command[f"{step}#{index}"])
        index += 1
    if not items_events:
        if source is None and over in run.graph.nodes:
            return None  # its list is not there yet
        refused = check_items(node, items)
        if refused is not None and refused.error is not None:
            error = {"type": refused.error.error_type, "message": refused.error.message}
            return NodeStatus(node.name, node.kind, "failed", error=error)
        if isinstance(items, list) and not items:
            return NodeStatus(node.name, node.kind, "completed", output=[], items=(0, 0))
        return None
    total = len(items) if isinstance(items, list) else len(items_events)
    ended = [_step(node, f"{step}#{i}", evs) for i, evs in enumerate(items_events)]
    done = [s for s in ended if s is not None and s.status in ("completed", "failed")]
    failed = [s for s in done if s.status == "failed"]
    commands = tuple(f"{step}#{i}" for i in range(len(items_events)))
    attempts = sum(s.attempts for s in ended if s is not None)
    first = min((s.started_at for s in ended if s and s.started_at), default=None)
    common: dict[str, Any] = {
        "node": node.name,
        "kind": node.kind,
        "attempts": attempts,
        "items": (len(done), total),
        "started_at": first,
        "commands": commands,
        "input": [s.input if s is not None else None for s in ended],
    }
    if len(done) < total:
        return NodeStatus(status="running", **common)
    last = max(done, key=lambda s: s.ended_seq or 0)
    allowed = math.floor(node.options.tolerate * total)
    if len(failed) > allowed:
        error = {"type": "MapItemsFailed", "message": f"{len(failed)} of {total} items failed"}
        return NodeStatus(
            status="failed", error=error, ended_at=last.ended_at, ended_seq=last.ended_seq, **common
        )
    output = [s.output if s is not None and s.status == "completed" else None for s in ended]
    return NodeStatus(
        status="completed",
        output=output,
        ended_at=last.ended_at,
        ended_seq=last.ended_seq,
        cached=all(s is not None and s.cached for s in ended),
        **common,
    )
