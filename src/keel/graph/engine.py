"""Running a graph: the interpreter a graph run's workflow executes.

A graph run is an ordinary run whose workflow function is this interpreter,
so it gets the journal, leases, fencing, queues and replay for free: each
node execution is a journaled step (named ``<graph>.<node>``; a map's items
are that step's calls in item order), a route's label and a rule's condition
are step results (decided once, never re-evaluated on replay), an approval is
a signal wait. The interpreter itself only decides, from the outcomes so far,
which nodes run, are skipped or are blocked; it is deterministic, so replay
reaches the same decisions.

Joins. A node's data parents (the nodes its parameters name) are always all
required: one blocked blocks it, one skipped skips it. ``join=`` governs its
``after=`` edges: ``all`` runs once every edge is satisfied (any blocked
blocks, else any unsatisfied skips); ``any`` runs once one edge is satisfied
(if none ever is: blocked if one is blocked, else skipped). An edge is
satisfied when its parent completed (and chose the edge's label, for a route
or approval). A failed node counts downstream as blocked, as skipped with
``on_error="skip"``, or as its handler's outcome with ``on_error="handler"``
(the handler's result then stands in for the node's output).
"""

from __future__ import annotations

import asyncio
import collections
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from keel.core.replay import current_execution
from keel.errors import (
    ChildWorkflowCancelled,
    ChildWorkflowError,
    NodeFailedError,
    SignalTimeoutError,
    StepFailedError,
)
from keel.graph.graphdef import GraphDef
from keel.graph.model import SKIP, Node, NodeError
from keel.graph.validate import handled_by
from keel.workflow.children import derived_child_id, run_child
from keel.workflow.context import wait_for_signal
from keel.workflow.definitions import StepDef

K = TypeVar("K")
V = TypeVar("V")
Status = Literal["completed", "skipped", "blocked", "failed"]
Verdict = Literal["run", "skip", "block"]

#: The signal an approval node waits for: ``approval:<node>``.
APPROVAL_SIGNAL = "approval:{node}"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one node."""

    status: Status
    value: Any = None
    label: str | None = None  # a route's or approval's choice
    error: NodeError | None = None


_SKIPPED = Outcome("skipped")
_BLOCKED = Outcome("blocked")


@dataclass(frozen=True, slots=True)
class NodeSteps:
    """The steps one node runs: its body, and a rule's condition."""

    body: StepDef[..., Any] | None
    condition: StepDef[..., Any] | None = None


class GraphRun:
    """One execution (or replay) of a graph inside its run's workflow."""

    def __init__(
        self, graph: GraphDef, steps: Mapping[str, NodeSteps], inputs: Mapping[str, Any]
    ) -> None:
        self.graph = graph
        self.steps = steps
        self.inputs = dict(inputs)
        self.outcomes: dict[str, Outcome] = {}
        self._handles = handled_by(dict(graph.nodes))  # handler -> the node it handles
        self._order = {name: i for i, name in enumerate(graph.nodes)}
        self._children: dict[str, list[str]] = {name: [] for name in graph.nodes}
        for node in graph.nodes.values():
            for parent in (*node.data_parents, *(e.parent for e in node.after)):
                if parent in self._children:
                    self._children[parent].append(node.name)
        # Whose verdict may change once a node is decided: its children, its
        # handler, and for a handler also the children of the node it handles
        # (their parent's outcome downstream is the handler's).
        self._recheck: dict[str, list[str]] = {n: list(c) for n, c in self._children.items()}
        for handler, handled in self._handles.items():
            self._recheck[handled].append(handler)
            self._recheck[handler].extend(self._children[handled])

    async def run(self) -> dict[str, Any]:
        """Run every node that should run; return the outputs of the completed
        sinks (nodes nothing depends on), or raise :class:`NodeFailedError`.

        Each decision looks only at the nodes a new outcome may unblock, so
        its cost does not grow with the number of nodes already done."""
        waiting = set(self.graph.nodes)
        check = collections.deque(self.graph.nodes)
        done = _Completions[str, Outcome]()
        running = 0
        while True:
            while check:
                name = check.popleft()
                if name not in waiting:
                    continue
                verdict = self._verdict(self.graph.nodes[name])
                if verdict is None:
                    continue
                waiting.discard(name)
                if verdict == "run":
                    done.watch(name, asyncio.ensure_future(self._execute(self.graph.nodes[name])))
                    running += 1
                else:
                    self.outcomes[name] = _SKIPPED if verdict == "skip" else _BLOCKED
                    check.extend(self._recheck[name])
            if not running:
                break
            for name, fut in await done.next():
                running -= 1
                self.outcomes[name] = fut.result()
                check.extend(self._recheck[name])
        return self._result()

    # -- deciding --------------------------------------------------------------------

    def effective(self, name: str) -> Outcome | None:
        """What ``name``'s outcome means downstream (``None``: not decided yet)."""
        own = self.outcomes.get(name)
        if own is None or own.status != "failed":
            return own
        handler = self.graph.nodes[name].options.on_error
        if handler == SKIP:
            return _SKIPPED
        if handler is not None:
            return self.effective(handler)
        return _BLOCKED

    def _verdict(self, node: Node) -> Verdict | None:
        states: list[Verdict | None] = []
        for parent in node.data_parents:
            if parent in self.graph.nodes:
                states.append(self._data_state(parent))
        handled = self._handles.get(node.name)
        if handled is not None:
            own = self.outcomes.get(handled)
            states.append(None if own is None else "run" if own.status == "failed" else "skip")
        states.append(self._after_state(node))
        if None in states:
            return None
        if "block" in states:
            return "block"
        if "skip" in states:
            return "skip"
        return "run"

    def _data_state(self, parent: str) -> Verdict | None:
        eff = self.effective(parent)
        if eff is None:
            return None
        return {"completed": "run", "skipped": "skip"}.get(eff.status, "block")  # type: ignore[return-value]

    def _edge_state(self, parent: str, label: str | None) -> Verdict | None:
        eff = self.effective(parent)
        if eff is None:
            return None
        if eff.status == "completed":
            return "run" if label is None or eff.label == label else "skip"
        return "skip" if eff.status == "skipped" else "block"

    def _after_state(self, node: Node) -> Verdict | None:
        edges = [self._edge_state(e.parent, e.label) for e in node.after]
        if not edges:
            return "run"
        if node.join == "any":
            if "run" in edges:
                return "run"
            if None in edges:
                return None
            return "block" if "block" in edges else "skip"
        if None in edges:
            return None
        if "block" in edges:
            return "block"
        return "skip" if "skip" in edges else "run"

    # -- executing -------------------------------------------------------------------

    def _arguments(self, node: Node, params: Any) -> dict[str, Any]:
        args: dict[str, Any] = {}
        for p in params:
            if p.source == "node":
                eff = self.effective(p.name)
                args[p.name] = None if eff is None else eff.value
            elif p.source == "input":
                if p.name in self.inputs:
                    args[p.name] = self.inputs[p.name]
            elif p.source == "error":
                handled = self._handles[node.name]
                args[p.name] = self.outcomes[handled].error
        return args

    async def _execute(self, node: Node) -> Outcome:
        steps = self.steps.get(node.name)
        try:
            if node.kind == "approval":
                return await self._approval(node)
            if node.kind == "child":
                args = self._arguments(node, node.params)
                child_id = child_run_id(self._run_id(), node.name)
                value = await run_child(node.workflow, child_id=child_id, **args)
                return Outcome("completed", value)
            assert steps is not None and steps.body is not None
            if node.kind == "map":
                return await self._map(node, steps.body)
            if node.kind == "rule":
                assert steps.condition is not None
                holds = await steps.condition(**self._arguments(node, node.condition_params))
                if not holds:
                    return _SKIPPED
            value = await steps.body(**self._arguments(node, node.params))
            if node.kind == "route":
                return self._routed(node, value)
            return Outcome("completed", value)
        except StepFailedError as exc:
            return Outcome(
                "failed", error=NodeError(node.name, exc.error_type, exc.message, exc.attempts)
            )
        except (ChildWorkflowError, ChildWorkflowCancelled) as exc:
            error = NodeError(node.name, type(exc).__name__, str(exc), 1)
            return Outcome("failed", error=error)

    def _routed(self, node: Node, label: Any) -> Outcome:
        followed = {
            e.label
            for child in self._children[node.name]
            for e in self.graph.nodes[child].after
            if e.parent == node.name
        }
        if label in followed:
            return Outcome("completed", label, label=label)
        known = ", ".join(sorted(str(x) for x in followed if x is not None)) or "none"
        message = f"route {node.name!r} chose {label!r}, which no edge follows (edges: {known})"
        return Outcome("failed", error=NodeError(node.name, "RouteError", message, 1))

    async def _approval(self, node: Node) -> Outcome:
        signal = APPROVAL_SIGNAL.format(node=node.name)
        try:
            decision = await wait_for_signal(signal, timeout=node.options.approval_timeout)
        except SignalTimeoutError:
            decision = {"decision": "timeout"}
        label = decision.get("decision") if isinstance(decision, dict) else None
        return Outcome("completed", decision, label=label)

    async def _map(self, node: Node, body: StepDef[..., Any]) -> Outcome:
        over = node.over
        assert over is not None
        source = self.effective(over) if over in self.graph.nodes else None
        raw: Any = source.value if source is not None else self.inputs.get(over)
        failure = check_items(node, raw)
        if failure is not None:
            return failure
        items: list[Any] = raw
        item_param = next(p.name for p in node.params if p.source == "item")
        rest = self._arguments(node, [p for p in node.params if p.source != "item"])
        results: list[Any] = [None] * len(items)
        failed: list[tuple[int, StepFailedError]] = []
        cap = node.options.max_concurrency
        done = _Completions[int, Any]()
        inflight = issued = 0
        while issued < len(items) or inflight:
            # Items are issued in item order (so item i is the node's i-th call),
            # never more than ``cap`` at once.
            while issued < len(items) and inflight < cap:
                call = body(**{item_param: items[issued]}, **rest)
                done.watch(issued, asyncio.ensure_future(call))
                issued += 1
                inflight += 1
            for index, fut in await done.next():
                inflight -= 1
                exc = fut.exception()
                if isinstance(exc, StepFailedError):
                    failed.append((index, exc))
                elif exc is not None:
                    raise exc
                else:
                    results[index] = fut.result()
        allowed = math.floor(node.options.tolerate * len(items))
        if len(failed) > allowed:
            index, first = min(failed, key=lambda f: f[0])
            message = (
                f"{len(failed)} of {len(items)} items failed (tolerated: {allowed}); "
                f"first, item {_keys(node, items)[index]!r}: {first.error_type}: {first.message}"
            )
            return Outcome(
                "failed", error=NodeError(node.name, "MapItemsFailed", message, first.attempts)
            )
        return Outcome("completed", results)

    @staticmethod
    def _run_id() -> str:
        execution = current_execution()
        assert execution is not None, "a graph runs inside its run's workflow"
        return execution.run_id

    # -- ending ----------------------------------------------------------------------

    def _result(self) -> dict[str, Any]:
        failed = [
            self.outcomes[name]
            for name, node in self.graph.nodes.items()
            if self.outcomes[name].status == "failed" and node.options.on_error is None
        ]
        if failed:
            blocked = [n for n, o in self.outcomes.items() if o.status == "blocked"]
            errors = [o.error for o in failed if o.error is not None]
            raise NodeFailedError(self.graph.name, errors, blocked)
        result: dict[str, Any] = {}
        for name in self.graph.nodes:
            if self._children[name] or name in self._handles:
                continue  # not a sink; a handler's result stands in for its node's
            eff = self.effective(name)
            if eff is not None and eff.status == "completed":
                result[name] = eff.value
        return result


class _Completions(Generic[K, V]):
    """Futures watched under tags; :meth:`next` returns those done since the last
    call, in the order they finished (O(1) per future, where ``asyncio.wait``
    would scan every pending one on each call)."""

    def __init__(self) -> None:
        self._done: collections.deque[tuple[K, asyncio.Future[V]]] = collections.deque()
        self._wake: asyncio.Future[None] | None = None

    def watch(self, tag: K, fut: asyncio.Future[V]) -> None:
        fut.add_done_callback(lambda f: self._finished(tag, f))

    def _finished(self, tag: K, fut: asyncio.Future[V]) -> None:
        self._done.append((tag, fut))
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def next(self) -> list[tuple[K, asyncio.Future[V]]]:
        if not self._done:
            self._wake = asyncio.get_running_loop().create_future()
            await self._wake
        batch = list(self._done)
        self._done.clear()
        return batch


def child_run_id(run_id: str, node: str) -> str:
    """The run id of the child run a child node starts: derived from the graph
    run's id and the node's name, so the status view finds it by name."""
    return derived_child_id(run_id, f"node:{node}")


def _keys(node: Node, items: list[Any]) -> list[str]:
    return [node.key(item) for item in items] if node.key else [str(i) for i in range(len(items))]


def check_items(node: Node, items: Any) -> Outcome | None:
    """A failure if a map cannot fan out over ``items``."""
    problem: str | None = None
    if not isinstance(items, list):
        problem = f"map {node.name!r} needs a list to fan out over, got {type(items).__name__}"
    elif len(items) > node.options.max_items:
        problem = (
            f"map {node.name!r} got {len(items)} items, more than max_items="
            f"{node.options.max_items}"
        )
    else:
        keys = _keys(node, items)
        seen: set[str] = set()
        for key in keys:
            if not isinstance(key, str):
                problem = f"map {node.name!r}: item key {key!r} is not a str"
                break
            if key in seen:
                problem = f"map {node.name!r}: two items have the key {key!r}"
                break
            seen.add(key)
    if problem is None:
        return None
    return Outcome("failed", error=NodeError(node.name, "MapError", problem, 1))
