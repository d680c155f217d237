"""Building a graph: bind every parameter, check the whole declaration, and
collect every problem (not just the first) into one :class:`GraphDefinitionError`.

Each problem has a stable path (``nodes.<name>``, ``nodes.<name>.after[i]``,
``nodes.<name>.params.<param>``) and code, so tools can point at it:

=========================  ==============================================================
code                       meaning
=========================  ==============================================================
``no_nodes``               the graph declares nothing
``bad_name``               a node name no store can hold (empty, NUL, ``#``, too long)
``duplicate_name``         two nodes, or a node and a graph input, share a name
``unknown_parent``         ``after=`` or ``map(over)`` names no node (nor input, for a map)
``not_a_branch``           an edge has a label but its parent is no route or approval
``unknown_label``          an edge's label is not one its route or approval can choose
``no_labels``              a route whose labels are unknown (no ``Literal`` return, no ``labels=``)
``cycle``                  the nodes depend on each other in a circle (the path is given)
``unbound_parameter``      a parameter that is neither a node nor a declared input, or
                           ``*args`` / ``**kwargs``
``map_without_item``       a map's function takes no parameter for the item
``unknown_handler``        ``on_error=`` names no node
``handler_without_error``  an error handler has no ``error`` parameter
``bad_annotation``         an annotation Keel's codec cannot encode or decode
``bad_option``             an option out of range (join, max_items, tolerate, ...)
``fan_in_of_non_map``      a parameter takes a list from a node that is no map and returns none
``not_a_workflow``         a child node's workflow is not a ``@keel.workflow`` (or graph)
=========================  ==============================================================
"""

from __future__ import annotations

import inspect
from collections import abc
from collections.abc import Callable
from dataclasses import replace
from typing import Any, get_origin, get_type_hints

from keel.core import codec, names
from keel.errors import ConfigurationError, GraphDefinitionError, GraphProblem
from keel.graph.model import SKIP, Graph, Node, NodeError, NodeOptions, Param
from keel.workflow.caching import ttl_seconds
from keel.workflow.definitions import WorkflowDef


class _Problems:
    def __init__(self) -> None:
        self.items: list[GraphProblem] = []

    def add(self, path: str, code: str, message: str) -> None:
        self.items.append(GraphProblem(path, code, message))


def build(graph: Graph) -> Any:
    """The :class:`~keel.graph.graphdef.GraphDef` of ``graph``, or
    :class:`GraphDefinitionError` with every problem found."""
    from keel.graph.graphdef import GraphDef

    problems = _Problems()
    nodes = _check_names(graph, problems)
    handlers = {n.options.on_error for n in nodes.values()} - {None, SKIP}
    inputs: dict[str, inspect.Parameter] = {}  # each input as the entry's parameter
    bound: dict[str, Node] = {}
    for node in nodes.values():
        bound[node.name] = _bind(graph, node, nodes, node.name in handlers, inputs, problems)
    for node in bound.values():
        _check_edges(node, bound, inputs, graph.inputs, problems)
        _check_options(node, bound, problems)
    if not problems.items:
        _check_cycles(bound, problems)
    if problems.items:
        raise GraphDefinitionError(graph.name, problems.items)
    order = _topological(bound)
    declared = graph.inputs if graph.inputs is not None else tuple(inputs)
    signature = tuple(
        inputs.get(name, inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY))
        for name in declared
    )
    return GraphDef(graph.name, {name: bound[name] for name in order}, tuple(declared), signature)


def _check_names(graph: Graph, problems: _Problems) -> dict[str, Node]:
    try:
        names.name(graph.name, "graph name")
    except (ConfigurationError, TypeError) as exc:
        problems.add("name", "bad_name", str(exc))
    if not graph.declared:
        problems.add("nodes", "no_nodes", "the graph declares no node")
    nodes: dict[str, Node] = {}
    for node in graph.declared:
        path = f"nodes.{node.name}"
        try:
            names.name(node.name, "node name", hash_ok=False)
        except (ConfigurationError, TypeError) as exc:
            problems.add(path, "bad_name", str(exc))
            continue
        if node.name in nodes:
            problems.add(path, "duplicate_name", f"two nodes are named {node.name!r}")
            continue
        nodes[node.name] = node
    for name in graph.inputs or ():
        if name in nodes:
            problems.add(f"inputs.{name}", "duplicate_name", f"{name!r} is a node and an input")
    return nodes


def _bind(
    graph: Graph,
    node: Node,
    nodes: dict[str, Node],
    is_handler: bool,
    inputs: dict[str, inspect.Parameter],
    problems: _Problems,
) -> Node:
    """``node`` with its parameters (and a rule's condition's) bound to sources."""
    path = f"nodes.{node.name}"
    params: tuple[Param, ...] = ()
    if node.fn is not None:
        first_is_item = node.kind == "map"
        params = _params(graph, node.fn, path, nodes, first_is_item, is_handler, inputs, problems)
        if node.kind == "map" and not any(p.source == "item" for p in params):
            problems.add(
                path, "map_without_item", "a map's function needs a parameter for the item"
            )
        if is_handler and not any(p.source == "error" for p in params):
            problems.add(
                path,
                "handler_without_error",
                "an error handler needs an `error: keel.NodeError` parameter",
            )
        try:
            codec.function_codec(node.fn)
        except (ConfigurationError, TypeError) as exc:
            problems.add(path, "bad_annotation", str(exc))
        for p in params:
            if p.source == "node" and _gathers(p.annotation) and _returns_one(nodes[p.name]):
                problems.add(
                    f"{path}.params.{p.name}",
                    "fan_in_of_non_map",
                    f"{p.name!r} takes a list, but node {p.name!r} is no map and does not "
                    "return a list: fan in from a map (@graph.map)",
                )
    if node.kind == "child" and not isinstance(node.workflow, WorkflowDef):
        problems.add(
            f"{path}.workflow", "not_a_workflow", f"{node.workflow!r} is not a @keel.workflow"
        )
    condition_params: tuple[Param, ...] = ()
    if node.condition is not None:
        condition_params = _params(
            graph, node.condition, f"{path}.condition", nodes, False, False, inputs, problems
        )
    return replace(node, params=params, condition_params=condition_params)


_LISTS = (list, abc.Sequence)


def _gathers(annotation: Any) -> bool:
    """Whether a parameter annotation asks for a list (a fan-in)."""
    return annotation is list or get_origin(annotation) in _LISTS


def _returns_one(parent: Node) -> bool:
    """Whether ``parent`` yields a single value that is not a list."""
    if parent.kind == "map" or parent.fn is None or parent.kind == "child":
        return False
    try:
        returned = get_type_hints(parent.fn).get("return", Any)
    except Exception:
        return False
    if returned is Any or returned is list or get_origin(returned) in _LISTS:
        return False
    return isinstance(returned, type) or get_origin(returned) is not None


def _params(
    graph: Graph,
    fn: Callable[..., Any],
    path: str,
    nodes: dict[str, Node],
    first_is_item: bool,
    is_handler: bool,
    inputs: dict[str, inspect.Parameter],
    problems: _Problems,
) -> tuple[Param, ...]:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        problems.add(path, "bad_annotation", f"cannot read the signature: {exc}")
        return ()
    try:
        hints = get_type_hints(fn)
    except Exception as exc:
        problems.add(path, "bad_annotation", f"cannot resolve the annotations: {exc}")
        hints = {}
    params: list[Param] = []
    for index, (name, p) in enumerate(signature.parameters.items()):
        where = f"{path}.params.{name}"
        annotation = hints.get(name, Any)
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            problems.add(where, "unbound_parameter", f"*{name} cannot be bound in a graph")
        elif index == 0 and first_is_item:
            params.append(Param(name, "item", annotation))
        elif is_handler and (annotation is NodeError or name == "error"):
            params.append(Param(name, "error", annotation))
        elif name in nodes:
            params.append(Param(name, "node", annotation))
        elif graph.inputs is not None and name not in graph.inputs:
            if p.default is p.empty:
                problems.add(
                    where,
                    "unbound_parameter",
                    f"{name!r} names no node and no input of the graph "
                    f"(inputs: {', '.join(graph.inputs) or 'none'})",
                )
        else:  # a graph input (optional if the parameter has a default)
            params.append(Param(name, "input", annotation))
            if name not in inputs or inputs[name].default is p.empty:
                inputs[name] = p.replace(kind=p.KEYWORD_ONLY, annotation=annotation)
    return tuple(params)


def _check_edges(
    node: Node,
    nodes: dict[str, Node],
    inputs: dict[str, inspect.Parameter],
    declared: tuple[str, ...] | None,
    problems: _Problems,
) -> None:
    path = f"nodes.{node.name}"
    if node.over is not None and node.over not in nodes and node.over not in inputs:
        if declared is not None and node.over not in declared:
            problems.add(
                f"{path}.over", "unknown_parent", f"map over {node.over!r}: no node or input"
            )
        else:
            inputs[node.over] = inspect.Parameter(
                node.over, inspect.Parameter.KEYWORD_ONLY, annotation=list[Any]
            )
    for i, edge in enumerate(node.after):
        where = f"{path}.after[{i}]"
        parent = nodes.get(edge.parent)
        if parent is None:
            problems.add(where, "unknown_parent", f"after {edge.parent!r}: no such node")
        elif edge.label is not None:
            if parent.kind not in ("route", "approval"):
                problems.add(
                    where,
                    "not_a_branch",
                    f"{edge.parent!r} is a {parent.kind}, not a route or approval: "
                    f"it chooses no label {edge.label!r}",
                )
            elif edge.label not in parent.labels:
                problems.add(
                    where,
                    "unknown_label",
                    f"{edge.parent!r} chooses one of {', '.join(parent.labels) or 'nothing'}, "
                    f"never {edge.label!r}",
                )
    if node.kind == "route" and not node.labels:
        problems.add(
            path, "no_labels", "a route needs labels: a Literal[...] return annotation or labels="
        )


def _check_options(node: Node, nodes: dict[str, Node], problems: _Problems) -> None:
    path = f"nodes.{node.name}"
    opts = node.options
    if node.join not in ("all", "any"):
        problems.add(
            f"{path}.join", "bad_option", f"join must be 'all' or 'any', not {node.join!r}"
        )
    handler = opts.on_error
    if handler is not None and handler != SKIP:
        if handler not in nodes:
            problems.add(
                f"{path}.on_error", "unknown_handler", f"on_error={handler!r}: no such node"
            )
        elif handler == node.name:
            problems.add(f"{path}.on_error", "cycle", "a node cannot handle its own failure")
    checks: list[tuple[str, bool, str]] = [
        ("max_items", isinstance(opts.max_items, int) and opts.max_items >= 1, "an int >= 1"),
        ("tolerate", 0.0 <= opts.tolerate < 1.0, "a fraction in [0, 1)"),
        (
            "max_concurrency",
            isinstance(opts.max_concurrency, int) and opts.max_concurrency >= 1,
            "an int >= 1",
        ),
        ("timeout", opts.timeout is None or opts.timeout > 0, "None or more than 0 seconds"),
        (
            "approval_timeout",
            opts.approval_timeout is None or opts.approval_timeout > 0,
            "None or more than 0 seconds",
        ),
    ]
    for name, ok, rule in checks:
        if not ok:
            problems.add(f"{path}.{name}", "bad_option", f"{name} must be {rule}")
    _check_cache(path, opts, problems)
    if opts.queue is not None:
        try:
            names.name(opts.queue, "queue", hash_ok=False)
        except (ConfigurationError, TypeError) as exc:
            problems.add(f"{path}.queue", "bad_option", str(exc))


def _check_cache(path: str, opts: NodeOptions, problems: _Problems) -> None:
    """``ttl`` (and ``version``) only mean something on a cached node."""
    if opts.ttl is not None:
        try:
            ttl_seconds(opts.ttl, "ttl")
        except ConfigurationError as exc:
            problems.add(f"{path}.ttl", "bad_option", str(exc))
    for name in ("ttl", "version"):
        if getattr(opts, name) is not None and not opts.cache:
            problems.add(f"{path}.{name}", "bad_option", f"{name}= needs cache=True")


def parents(node: Node, handled_by: dict[str, str]) -> list[str]:
    """Every node ``node`` waits for: data, ``after=`` edges, and the node it handles."""
    found = [*node.data_parents, *(e.parent for e in node.after)]
    if node.name in handled_by:
        found.append(handled_by[node.name])
    return list(dict.fromkeys(found))


def handled_by(nodes: dict[str, Node]) -> dict[str, str]:
    """Handler node -> the node whose failure it handles."""
    return {
        n.options.on_error: n.name
        for n in nodes.values()
        if n.options.on_error is not None and n.options.on_error != SKIP
    }


def _check_cycles(nodes: dict[str, Node], problems: _Problems) -> None:
    handlers = handled_by(nodes)
    state: dict[str, int] = {}  # 1: on the path, 2: done
    stack: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        stack.append(name)
        for parent in parents(nodes[name], handlers):
            if parent not in nodes:
                continue
            if state.get(parent) == 1:
                cycle = [*stack[stack.index(parent) :], parent]
                problems.add(f"nodes.{parent}", "cycle", "a cycle: " + " -> ".join(reversed(cycle)))
            elif parent not in state:
                visit(parent)
        stack.pop()
        state[name] = 2

    for name in nodes:
        if name not in state:
            visit(name)


def _topological(nodes: dict[str, Node]) -> list[str]:
    """Node names, parents first, ties in declaration order."""
    handlers = handled_by(nodes)
    done: set[str] = set()
    order: list[str] = []

    def visit(name: str) -> None:
        if name in done:
            return
        done.add(name)
        for parent in parents(nodes[name], handlers):
            if parent in nodes:
                visit(parent)
        order.append(name)

    for name in nodes:
        visit(name)
    return order
