"""A graph as data: its spec (plain JSON-able structure, no code) and its digest.

The spec holds everything structural (nodes, kinds, parameters' sources,
edges, labels, join policies, options) and names the code it needs instead of
holding it: a node's function is the action named like the node, a map's key
function ``"<node>.key"``, a rule's condition ``"<node>.condition"``, a
``non_retryable`` exception type its qualified name. :func:`from_spec` takes
those from an allow-list of callables, so a spec from elsewhere can only run
code the application chose to offer.

The digest (a graph's version) is a hash of the canonical spec: equal
structure, equal version, whatever the node bodies say. So editing a node's
body keeps the version (runs in flight resume on the new body, as a code
workflow's steps do), and adding a node or an edge makes a new version.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, fields
from typing import TYPE_CHECKING, Any

from keel.core.retry import RetryPolicy
from keel.errors import GraphDefinitionError, GraphProblem
from keel.graph.model import Edge, Graph, Node, NodeOptions

if TYPE_CHECKING:
    from keel.graph.graphdef import GraphDef
    from keel.graph.workflow import GraphWorkflow
    from keel.workflow.registry import Registry

#: The spec format this code writes and reads.
SPEC_FORMAT = 1
_DEFAULT_OPTIONS = NodeOptions()


def node_spec(node: Node) -> dict[str, Any]:
    """One node's part of the spec."""
    spec: dict[str, Any] = {"name": node.name, "kind": node.kind}
    if node.params:
        spec["params"] = [[p.name, p.source] for p in node.params]
    if node.condition_params:
        spec["condition_params"] = [[p.name, p.source] for p in node.condition_params]
    if node.after:
        spec["after"] = [[e.parent, e.label] for e in node.after]
    if node.join != "all":
        spec["join"] = node.join
    if node.over is not None:
        spec["over"] = node.over
    if node.key is not None:
        spec["key"] = f"{node.name}.key"
    if node.condition is not None:
        spec["condition"] = f"{node.name}.condition"
    if node.workflow is not None:
        spec["workflow"] = node.workflow.name
    if node.labels and node.kind != "approval":
        spec["labels"] = list(node.labels)
    options = _options_spec(node.options)
    if options:
        spec["options"] = options
    return spec


def _options_spec(options: NodeOptions) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(NodeOptions):
        value = getattr(options, f.name)
        if value == getattr(_DEFAULT_OPTIONS, f.name):
            continue
        if isinstance(value, RetryPolicy):
            policy = asdict(value)
            policy["non_retryable"] = [_qualname(t) for t in value.non_retryable]
            value = policy
        out[f.name] = value
    return out


def _qualname(tp: type) -> str:
    return f"{tp.__module__}.{tp.__qualname__}"


def graph_spec(graph: GraphDef) -> dict[str, Any]:
    """The whole graph's spec, nodes in their (topological) order."""
    return {
        "format": SPEC_FORMAT,
        "graph": graph.name,
        "inputs": list(graph.inputs),
        "nodes": [node_spec(node) for node in graph.nodes.values()],
    }


def canonical(spec: Mapping[str, Any]) -> bytes:
    """The spec's canonical bytes (sorted keys, no spaces): what the digest hashes
    and what the store keeps."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest(spec: Mapping[str, Any]) -> str:
    """The version of a graph with this spec (16 hex digits of SHA-256)."""
    return hashlib.sha256(canonical(spec)).hexdigest()[:16]


def from_spec(
    spec: Mapping[str, Any],
    actions: Mapping[str, Callable[..., Any]],
    *,
    registry: Registry | None = None,
) -> GraphWorkflow:
    """The graph ``spec`` describes, its code taken from ``actions`` (an allow-list:
    node name -> function, ``"<node>.key"``, ``"<node>.condition"``, exception
    qualified name -> type). The result has the same spec and digest, or this
    raises :class:`keel.GraphDefinitionError`. Registered like :meth:`Graph.build`."""
    name = str(spec.get("graph", ""))
    problems: list[GraphProblem] = []
    if spec.get("format") != SPEC_FORMAT:
        problems.append(
            GraphProblem(
                "format", "bad_spec", f"spec format {spec.get('format')!r} is not {SPEC_FORMAT}"
            )
        )
        raise GraphDefinitionError(name, problems)
    inputs = spec.get("inputs")
    graph = Graph(name, inputs=list(inputs) if isinstance(inputs, list) else None)
    for item in spec.get("nodes", []):
        node = _node_from_spec(item, actions, problems)
        if node is not None:
            graph.declared.append(node)
    if problems:
        raise GraphDefinitionError(name, problems)
    from keel.graph.validate import build
    from keel.graph.workflow import GraphWorkflow

    built = build(graph)
    rebuilt = graph_spec(built)
    if canonical(rebuilt) != canonical(spec):
        mismatched = [
            f"nodes.{a.get('name')}"
            for a, b in zip(rebuilt["nodes"], spec.get("nodes", []), strict=False)
            if a != b
        ] or ["nodes"]
        raise GraphDefinitionError(
            name,
            [
                GraphProblem(
                    path,
                    "spec_mismatch",
                    "the actions given do not fit the spec (parameters or order differ)",
                )
                for path in mismatched
            ],
        )
    workflow = GraphWorkflow(built)
    workflow.register(registry)
    return workflow


def _node_from_spec(
    item: Mapping[str, Any], actions: Mapping[str, Callable[..., Any]], problems: list[GraphProblem]
) -> Node | None:
    name = str(item.get("name", ""))
    kind = item.get("kind")
    path = f"nodes.{name}"
    if kind not in ("node", "map", "route", "rule", "approval", "child"):
        problems.append(GraphProblem(f"{path}.kind", "bad_spec", f"unknown node kind {kind!r}"))
        return None

    def action(key: str) -> Callable[..., Any] | None:
        found = actions.get(key)
        if found is None:
            problems.append(
                GraphProblem(path, "unknown_action", f"no action {key!r} in the allow-list")
            )
        return found

    workflow = action(str(item.get("workflow"))) if kind == "child" else None
    fn = getattr(workflow, "fn", None) if kind == "child" else None
    if kind not in ("approval", "child"):
        fn = action(name)
    key = action(f"{name}.key") if "key" in item else None
    condition = action(f"{name}.condition") if "condition" in item else None
    options = _options_from_spec(item.get("options", {}), actions, path, problems)
    from keel.graph.model import APPROVAL_LABELS

    labels = APPROVAL_LABELS if kind == "approval" else tuple(item.get("labels", ()))
    return Node(
        name=name,
        kind=kind,
        fn=fn,
        params=(),
        after=tuple(Edge(p, label) for p, label in item.get("after", [])),
        join=item.get("join", "all"),
        options=options,
        over=item.get("over"),
        key=key,
        condition=condition,
        labels=labels,
        workflow=workflow,
    )


def _options_from_spec(
    raw: Mapping[str, Any],
    actions: Mapping[str, Callable[..., Any]],
    path: str,
    problems: list[GraphProblem],
) -> NodeOptions:
    known = {f.name for f in fields(NodeOptions)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            problems.append(GraphProblem(f"{path}.options.{key}", "bad_spec", "unknown option"))
            continue
        if key == "retry" and isinstance(value, Mapping):
            policy = dict(value)
            types = []
            for qual in policy.get("non_retryable", []):
                tp = actions.get(qual)
                if not isinstance(tp, type):
                    problems.append(
                        GraphProblem(
                            f"{path}.options.retry", "unknown_action", f"no exception type {qual!r}"
                        )
                    )
                else:
                    types.append(tp)
            policy["non_retryable"] = tuple(types)
            value = RetryPolicy(**policy)
        values[key] = value
    return NodeOptions(**values)
