"""A built graph as a workflow: what ``client.start`` and ``start_child`` take.

The graph's name is the workflow's name, its structural digest the version
(so a run resumes only on the structure it started on, and a worker without
that version parks it, as with code workflows). Each node body is registered
as a step named ``<graph>.<node>`` (queued nodes are found by task workers
through it).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from keel.core.retry import RetryPolicy
from keel.graph.engine import GraphRun, NodeSteps
from keel.graph.graphdef import GraphDef
from keel.graph.model import Node
from keel.workflow import caching
from keel.workflow.definitions import StepDef, WorkflowDef
from keel.workflow.registry import Registry, default_registry

#: A rule's condition runs once: a condition that raises fails the rule.
CONDITION_RETRY = RetryPolicy(max_attempts=1)


class GraphWorkflow(WorkflowDef[..., dict[str, Any]]):
    """A registered graph: start it like any workflow (its inputs as keywords).

    The run's result is the outputs of the graph's sinks (nodes nothing
    depends on) that completed, by node name.
    """

    def __init__(self, graph: GraphDef, *, current: bool = True) -> None:
        self.graph = graph
        self.steps: dict[str, NodeSteps] = {
            name: _node_steps(graph.name, node) for name, node in graph.nodes.items()
        }
        super().__init__(_entry(graph, self.steps), graph.name, graph.version, current=current)

    @property
    def nodes(self) -> Mapping[str, Node]:
        return self.graph.nodes

    @property
    def inputs(self) -> tuple[str, ...]:
        return self.graph.inputs

    def to_spec(self) -> dict[str, Any]:
        return self.graph.to_spec()

    def to_mermaid(self) -> str:
        return self.graph.to_mermaid()

    def to_dot(self) -> str:
        return self.graph.to_dot()

    def register(self, registry: Registry | None = None) -> None:
        """Add the workflow and its nodes' steps to ``registry`` (default: the global one)."""
        target = registry or default_registry
        target.add(self)  # refuses a clashing version before anything is added
        for steps in self.steps.values():
            for step in (steps.body, steps.condition):
                if step is not None:
                    target.add_step(step)

    def __repr__(self) -> str:
        return f"<keel graph {self.name!r} version {self.version!r}>"


def step_name(graph: str, node: str) -> str:
    """The name of the step that runs ``node``'s body."""
    return f"{graph}.{node}"


def _node_steps(graph: str, node: Node) -> NodeSteps:
    if node.fn is None or node.kind == "child":
        return NodeSteps(None)
    opts = node.options
    policy = opts.retry or RetryPolicy()
    if opts.timeout is not None:
        policy = policy.with_(timeout=opts.timeout)
    body: StepDef[..., Any] = StepDef(
        node.fn,
        step_name(graph, node.name),
        policy,
        queue=opts.queue,
        priority=opts.priority,
        cache=caching.policy(node.fn, opts.version, opts.ttl) if opts.cache else None,
    )
    condition: StepDef[..., Any] | None = None
    if node.condition is not None:
        condition = StepDef(
            node.condition, f"{step_name(graph, node.name)}.condition", CONDITION_RETRY
        )
    return NodeSteps(body, condition)


def _entry(graph: GraphDef, steps: Mapping[str, NodeSteps]) -> Any:
    """The workflow function: the graph's inputs as keyword-only parameters."""

    async def run_graph(**inputs: Any) -> dict[str, Any]:
        return await GraphRun(graph, steps, inputs).run()

    params = [p.replace(annotation=Any) if p.annotation is p.empty else p for p in graph.signature]
    run_graph.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        params, return_annotation=dict[str, Any]
    )
    run_graph.__annotations__ = {p.name: p.annotation for p in params} | {"return": dict[str, Any]}
    run_graph.__name__ = run_graph.__qualname__ = graph.name
    return run_graph
