"""A graph workflow's declaration: nodes, their parameters and edges, options.

A :class:`Graph` collects nodes through decorators (or :func:`keel.graph.spec.from_spec`);
:meth:`Graph.build` validates the whole declaration at once and returns a
:class:`GraphDef`, the immutable graph a run executes.

Where a node's inputs come from is read from its parameter names: a parameter
named after another node receives that node's output (a map node's output is
the list of its items' results, in item order: that is fan-in); any other
parameter is an input of the graph, given to ``client.start``. ``after=`` adds
edges that carry no value: ``"load"`` (order only) or ``("triage", "review")``
(only if that route, or approval, chose that label).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import (
    TYPE_CHECKING,
    Any,
    Literal,
    TypeVar,
    get_args,
    get_origin,
    get_type_hints,
    overload,
)

from keel.core.retry import RetryPolicy

if TYPE_CHECKING:
    from keel.graph.workflow import GraphWorkflow
    from keel.workflow.registry import Registry

F = TypeVar("F", bound=Callable[..., Any])

NodeKind = Literal["node", "map", "route", "rule", "approval", "child"]
Join = Literal["all", "any"]
#: The labels an approval node chooses from.
APPROVAL_LABELS: tuple[str, ...] = ("approved", "rejected", "timeout")
#: ``on_error="skip"``: a node failed after its retries counts as skipped downstream.
SKIP = "skip"
DEFAULT_MAX_ITEMS = 1000
#: Items of one map in flight at once unless ``max_concurrency=`` says otherwise:
#: each pass of the worker over a run looks at its pending commands, so
#: thousands in flight at once would cost every pass that much.
DEFAULT_MAX_CONCURRENCY = 100


@dataclass(frozen=True, slots=True)
class NodeError:
    """What an error handler receives about the node that failed (``error: NodeError``)."""

    node: str
    error_type: str
    message: str
    attempts: int


@dataclass(frozen=True, slots=True)
class Edge:
    """``parent`` must complete (and, for a route or approval, choose ``label``)."""

    parent: str
    label: str | None = None


@dataclass(frozen=True, slots=True)
class Param:
    """Where one parameter of a node's function gets its value.

    ``source``: ``"node"`` (the output of the node named ``name``), ``"input"``
    (the graph input ``name``), ``"item"`` (a map's item) or ``"error"`` (the
    :class:`NodeError` of the node a handler handles)."""

    name: str
    source: Literal["node", "input", "item", "error"]
    annotation: Any = Any


@dataclass(frozen=True, slots=True)
class NodeOptions:
    """Per-node options; the structural ones are part of the graph's version."""

    retry: RetryPolicy | None = None
    timeout: float | None = None
    queue: str | None = None
    priority: int = 0
    on_error: str | None = None  # a handler node's name, or SKIP
    cache: bool = False  # reuse results of equal inputs to the same code, across runs
    version: str | None = None  # pins the cache's code digest
    ttl: float | None = None  # seconds a cached result may be reused (None: for ever)
    # map
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    max_items: int = DEFAULT_MAX_ITEMS
    tolerate: float = 0.0  # fraction of items allowed to fail
    # approval
    approval_timeout: float | None = None


@dataclass(frozen=True, slots=True)
class Node:
    """One declared node (frozen once built)."""

    name: str
    kind: NodeKind
    fn: Callable[..., Any] | None
    params: tuple[Param, ...]
    after: tuple[Edge, ...] = ()
    join: Join = "all"
    options: NodeOptions = field(default_factory=NodeOptions)
    over: str | None = None  # map: the node or input whose list it fans out over
    key: Callable[[Any], str] | None = None  # map: the stable key of an item
    condition: Callable[..., bool] | None = None  # rule
    condition_params: tuple[Param, ...] = ()  # rule: where its condition's arguments come from
    labels: tuple[str, ...] = ()  # route, approval: the labels it may choose
    workflow: Any = None  # child: the WorkflowDef it runs as a child run
    #: Where the declaration came from, for problems ("file.py:12").
    where: str = ""

    @property
    def data_parents(self) -> tuple[str, ...]:
        """The nodes whose outputs this node's parameters (or map) read."""
        names = [p.name for p in (*self.params, *self.condition_params) if p.source == "node"]
        names = list(dict.fromkeys(names))
        if self.over is not None and self.over not in names:
            names.insert(0, self.over)
        return tuple(names)


class Graph:
    """A graph workflow being declared. Decorate functions with :meth:`node`,
    :meth:`map`, :meth:`route`, :meth:`rule`; add :meth:`approval` nodes; then
    :meth:`build`. Nothing is checked (or registered) until :meth:`build`."""

    def __init__(self, name: str, *, inputs: Sequence[str] | None = None) -> None:
        self.name = name
        #: Declared graph inputs; ``None``: every unbound parameter is one.
        self.inputs = None if inputs is None else tuple(inputs)
        self.declared: list[Node] = []

    # -- decorators ------------------------------------------------------------------

    @overload
    def node(self, fn: F, /) -> F: ...

    @overload
    def node(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        after: Iterable[str | tuple[str, str]] | str | tuple[str, str] = (),
        join: Join = "all",
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        queue: str | None = None,
        priority: int = 0,
        on_error: str | None = None,
        cache: bool = False,
        version: str | None = None,
        ttl: float | timedelta | None = None,
    ) -> Callable[[F], F]: ...

    def node(
        self,
        fn: F | None = None,
        /,
        *,
        name: str | None = None,
        after: Iterable[str | tuple[str, str]] | str | tuple[str, str] = (),
        join: Join = "all",
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        queue: str | None = None,
        priority: int = 0,
        on_error: str | None = None,
        cache: bool = False,
        version: str | None = None,
        ttl: float | timedelta | None = None,
    ) -> Any:
        """Declare a node: its function runs once its parents are done.

        ``cache=True`` reuses the result of an earlier execution, in any run, of
        the same code on equal inputs (``version=`` pins the code's digest;
        ``ttl=``, seconds or a ``timedelta``, bounds how old a reused result may
        be; see :mod:`keel.workflow.caching`)."""
        options = NodeOptions(
            retry=retry,
            timeout=timeout,
            queue=queue,
            priority=priority,
            on_error=on_error,
            cache=cache,
            version=version,
            ttl=_seconds(ttl),
        )

        def add(f: F) -> F:
            self._add("node", f, name, after, join, options)
            return f

        return add(fn) if fn is not None else add

    def map(
        self,
        over: str,
        *,
        key: Callable[[Any], str] | None = None,
        name: str | None = None,
        after: Iterable[str | tuple[str, str]] | str | tuple[str, str] = (),
        join: Join = "all",
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        max_items: int = DEFAULT_MAX_ITEMS,
        tolerate: float = 0.0,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        queue: str | None = None,
        priority: int = 0,
        on_error: str | None = None,
        cache: bool = False,
        version: str | None = None,
        ttl: float | timedelta | None = None,
    ) -> Callable[[F], F]:
        """Declare a fan-out: the function runs once per item of ``over``'s list
        (its first parameter is the item); the node's output is the list of
        results in item order. ``key`` gives each item a stable, unique key
        (default: its position). At most ``max_concurrency`` items run at once
        (the engine issues the next only when one ends), at most ``max_items``
        may be given (more fails the node, running none), and up to
        ``tolerate`` (a fraction) of them may fail: their results are ``None``.
        ``cache``, ``version`` and ``ttl`` cache each item's result as on
        :meth:`node`."""
        options = NodeOptions(
            retry=retry,
            timeout=timeout,
            queue=queue,
            priority=priority,
            on_error=on_error,
            cache=cache,
            version=version,
            ttl=_seconds(ttl),
            max_concurrency=max_concurrency,
            max_items=max_items,
            tolerate=tolerate,
        )

        def add(f: F) -> F:
            self._add("map", f, name, after, join, options, over=over, key=key)
            return f

        return add

    @overload
    def route(self, fn: F, /) -> F: ...

    @overload
    def route(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        labels: Sequence[str] | None = None,
        after: Iterable[str | tuple[str, str]] | str | tuple[str, str] = (),
        join: Join = "all",
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> Callable[[F], F]: ...

    def route(
        self,
        fn: F | None = None,
        /,
        *,
        name: str | None = None,
        labels: Sequence[str] | None = None,
        after: Iterable[str | tuple[str, str]] | str | tuple[str, str] = (),
        join: Join = "all",
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Declare a route: its function returns one label, decided once and
        journaled; ``after=("route", "label")`` edges follow it. The labels are
        ``labels`` or read from a ``Literal[...]`` return annotation."""
        options = NodeOptions(retry=retry, timeout=timeout)

        def add(f: F) -> F:
            chosen = tuple(labels) if labels is not None else _literal_labels(f)
            self._add("route", f, name, after, join, options, labels=chosen)
            return f

        return add(fn) if fn is not None else add

    def rule(
        self,
        condition: Callable[..., bool],
        *,
        name: str | None = None,
        after: Iterable[str | tuple[str, str]] | str | tuple[str, str] = (),
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        queue: str | None = None,
    ) -> Callable[[F], F]:
        """Declare a rule: the reaction runs only when ``condition`` (called with
        the parameters it names, like a node) holds; otherwise it is skipped."""
        options = NodeOptions(retry=retry, timeout=timeout, queue=queue)

        def add(f: F) -> F:
            self._add("rule", f, name, after, "all", options, condition=condition)
            return f

        return add

    def approval(
        self,
        name: str,
        *,
        after: Iterable[str | tuple[str, str]] | str | tuple[str, str] = (),
        join: Join = "all",
        timeout: float | None = None,
    ) -> None:
        """Declare an approval: the run waits here until someone approves or
        rejects it (or ``timeout`` seconds pass); the decision is the node's
        output and its label (``approved``, ``rejected``, ``timeout``)."""
        options = NodeOptions(approval_timeout=timeout)
        self._add("approval", None, name, after, join, options, labels=APPROVAL_LABELS)

    def child(
        self,
        name: str,
        workflow: Any,
        *,
        after: Iterable[str | tuple[str, str]] | str | tuple[str, str] = (),
        join: Join = "all",
        on_error: str | None = None,
    ) -> None:
        """Declare a node that runs ``workflow`` (a code workflow, or another
        graph) as a child run; its parameters are bound like a node's, and its
        result is the node's output. A failed or cancelled child fails the node."""
        options = NodeOptions(on_error=on_error)
        fn = getattr(workflow, "fn", None)
        self._add("child", fn, name, after, join, options, workflow=workflow)

    # -- collecting --------------------------------------------------------------------

    def _add(
        self,
        kind: NodeKind,
        fn: Callable[..., Any] | None,
        name: str | None,
        after: Iterable[str | tuple[str, str]] | str | tuple[str, str],
        join: Join,
        options: NodeOptions,
        *,
        over: str | None = None,
        key: Callable[[Any], str] | None = None,
        condition: Callable[..., bool] | None = None,
        labels: tuple[str, ...] = (),
        workflow: Any = None,
    ) -> None:
        node_name = name if name is not None else getattr(fn, "__name__", "")
        self.declared.append(
            Node(
                name=node_name,
                kind=kind,
                fn=fn,
                params=(),  # bound in build(), when every node's name is known
                after=_edges(after),
                join=join,
                options=options,
                over=over,
                key=key,
                condition=condition,
                labels=labels,
                workflow=workflow,
                where=_where(fn),
            )
        )

    def build(self, *, registry: Registry | None = None, current: bool = True) -> GraphWorkflow:
        """Validate the declaration, then register the graph as a workflow (in
        ``registry``, default the global one) and return it. Raises
        :class:`keel.GraphDefinitionError` listing every problem; nothing is
        registered then. ``current=False`` keeps an older structure registered
        only to finish the runs that started on it."""
        from keel.graph.validate import build
        from keel.graph.workflow import GraphWorkflow

        built = GraphWorkflow(build(self), current=current)
        built.register(registry)
        return built


def _seconds(ttl: Any) -> Any:
    """A TTL as float seconds, so ``ttl=60`` and ``ttl=timedelta(minutes=1)``
    give one spec (and one version); other values are left for :meth:`Graph.build`
    to report."""
    if isinstance(ttl, timedelta):
        return ttl.total_seconds()
    if isinstance(ttl, int) and not isinstance(ttl, bool):
        return float(ttl)
    return ttl


def _edges(after: Iterable[str | tuple[str, str]] | str | tuple[str, str]) -> tuple[Edge, ...]:
    if isinstance(after, str):
        return (Edge(after),)
    if isinstance(after, tuple) and len(after) == 2:
        parent, label = after
        if isinstance(parent, str) and isinstance(label, str):
            return (Edge(parent, label),)
    edges: list[Edge] = []
    for item in after:
        if isinstance(item, str):
            edges.append(Edge(item))
        else:
            parent, label = item
            edges.append(Edge(parent, label))
    return tuple(edges)


def _literal_labels(fn: Callable[..., Any]) -> tuple[str, ...]:
    """The labels of a ``Literal["a", "b"]`` return annotation (``()`` if none)."""
    try:
        hints = get_type_hints(fn)
    except Exception:
        return ()
    ret = hints.get("return")
    if get_origin(ret) is Literal:
        return tuple(str(a) for a in get_args(ret))
    return ()


def _where(fn: Callable[..., Any] | None) -> str:
    if fn is None:
        return ""
    try:
        _, line = inspect.getsourcelines(fn)
        return f"{inspect.getsourcefile(fn)}:{line}"
    except (OSError, TypeError):
        return ""
