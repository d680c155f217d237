"""Graph specs in the store: saved by digest, loaded back without user code.

A graph's version is the digest of its canonical spec, so the spec stored under
``(graph, version)`` says exactly what every run at that version runs. Workers
save the specs of the graphs they register and clients those they start; the
CLI, :meth:`keel.Client.nodes` and the replay checker load them to draw,
approve and check a graph run in a process that never imported the graph.

A loaded spec is trusted only if its digest is the version it is stored under
(and it names the graph): a damaged or foreign row is refused with a clear
:class:`keel.errors.StoreError`, never drawn wrongly.

:func:`placeholder_graph` rebuilds a runnable :class:`GraphWorkflow` from a
spec alone, for replay: its node bodies, conditions and child workflows are
placeholders that raise if ever called (on replay their results come from the
journal). Their values are plain JSON, without the annotations that shaped the
recorded arguments, so such a replay compares commands, results and endings
but not arguments hashes (``check_args=False``).
"""

from __future__ import annotations

import inspect
import json
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from keel.errors import ConfigurationError, StoreError, WorkflowError
from keel.graph.graphdef import GraphDef
from keel.graph.model import NodeError
from keel.graph.spec import canonical, digest, from_spec
from keel.graph.workflow import GraphWorkflow
from keel.workflow.definitions import WorkflowDef
from keel.workflow.registry import Registry


class Specs(Protocol):
    """What this module needs of a store: ``store.specs``
    (:class:`keel.store.ports.GraphSpecs`; the graph layer does not import the store's)."""

    async def save(self, workflow: str, version: str, spec: bytes) -> None: ...

    async def load(self, workflow: str, version: str) -> bytes | None: ...


#: Per ``store.specs`` object: the (graph, version) pairs this process saved there.
_saved: weakref.WeakKeyDictionary[Any, set[tuple[str, str]]] = weakref.WeakKeyDictionary()


async def save_spec(specs: Specs, graph: GraphWorkflow) -> None:
    """Store ``graph``'s spec under its (name, version), once per process and store."""
    pair = (graph.name, graph.version)
    try:
        done = _saved.setdefault(specs, set())
    except TypeError:  # not weakly referable or hashable: save every time (idempotent)
        done = set()
    if pair in done:
        return
    await specs.save(graph.name, graph.version, canonical(graph.to_spec()))
    done.add(pair)


async def save_specs(specs: Specs, registry: Registry) -> None:
    """Store the spec of every graph ``registry`` holds (every version)."""
    for name in registry.names():
        for wf in registry.versions(name):
            if isinstance(wf, GraphWorkflow):
                await save_spec(specs, wf)


async def load_spec(specs: Specs, workflow: str, version: str) -> dict[str, Any] | None:
    """The spec stored for ``(workflow, version)`` (``None``: none stored), after
    checking that it is that graph's and that its digest is ``version``."""
    data = await specs.load(workflow, version)
    if data is None:
        return None
    where = f"the stored spec of graph {workflow!r} version {version!r}"
    try:
        spec = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StoreError(f"{where} is not JSON ({exc}); refusing to use it") from None
    if not isinstance(spec, dict):
        raise StoreError(f"{where} is not a JSON object; refusing to use it")
    found = digest(spec)
    if found != version or spec.get("graph") != workflow:
        raise StoreError(
            f"{where} does not fit it (its digest is {found!r}, its graph "
            f"{spec.get('graph')!r}): the row is damaged or foreign; refusing to use it"
        )
    return spec


def not_stored(run_id: str, workflow: str, version: str) -> ConfigurationError:
    """The error for a graph run whose spec was never stored (started before
    specs were stored, by an older Keel)."""
    return ConfigurationError(
        f"run {run_id!r} runs {workflow!r} version {version!r}, which is not a graph this "
        "process imported and whose spec is not stored (the run started before Keel stored "
        "graph specs?); pass --app MODULE (or import the module that builds the graph)"
    )


async def graph_of_run(
    specs: Specs, registry: Registry, workflow: str, version: str
) -> GraphDef | None:
    """The graph a run of ``workflow`` at ``version`` runs: the imported one if
    ``registry`` has that version, else the stored spec's (drawn, not runnable);
    ``None`` if the run is no graph run this process or the store knows."""
    found = registry.find(workflow, version)
    if isinstance(found, GraphWorkflow):
        return found.graph
    if found is not None:
        return None  # a code workflow
    spec = await load_spec(specs, workflow, version)
    return None if spec is None else placeholder_graph(spec).graph


# --- a graph from its spec alone -----------------------------------------------------------


def placeholder_graph(spec: Mapping[str, Any]) -> GraphWorkflow:
    """The graph ``spec`` describes, with placeholder code (see the module doc),
    in a registry of its own: for drawing and replay, never for running nodes."""
    return from_spec(spec, _placeholder_actions(spec), registry=Registry())


def _placeholder_actions(spec: Mapping[str, Any]) -> dict[str, Any]:
    actions: dict[str, Any] = {}
    graph = str(spec.get("graph", ""))
    for item in spec.get("nodes", []):
        name = str(item.get("name", ""))
        kind = item.get("kind")
        params = item.get("params", [])
        if kind == "child":
            child = str(item.get("workflow", ""))
            actions[child] = _child_workflow(child, params)
        elif kind != "approval":
            actions[name] = _placeholder(f"node {name!r} of graph {graph!r}", params)
        if "key" in item:
            actions[f"{name}.key"] = _item_key
        if "condition" in item:
            what = f"the condition of rule {name!r} of graph {graph!r}"
            actions[f"{name}.condition"] = _placeholder(what, item.get("condition_params", []))
        retry = item.get("options", {}).get("retry") or {}
        for qualname in retry.get("non_retryable", []):
            actions[qualname] = _exception_type(qualname)
    return actions


def _signature(params: list[list[str]]) -> inspect.Signature:
    # The parameters' names and order are what the spec records; an error
    # handler's parameter is recognised by its annotation, the rest take JSON.
    return inspect.Signature(
        [
            inspect.Parameter(
                name,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                annotation=NodeError if source == "error" else Any,
            )
            for name, source in params
        ],
        return_annotation=Any,
    )


def _placeholder(what: str, params: list[list[str]]) -> Callable[..., Any]:
    def placeholder(*args: Any, **kwargs: Any) -> Any:
        raise WorkflowError(
            f"{what} was built from its stored spec, without its code: it cannot run "
            "(pass --app MODULE to use the graph's code)"
        )

    signature = _signature(params)
    placeholder.__signature__ = signature  # type: ignore[attr-defined]
    placeholder.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
    placeholder.__annotations__["return"] = Any
    return placeholder


def _child_workflow(name: str, params: list[list[str]]) -> WorkflowDef[..., Any]:
    """A stand-in for a child node's workflow: its name (what the journal
    records) and the parameters the node binds; it never runs."""
    fn = _placeholder(f"child workflow {name!r}", params)

    async def child(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    child.__signature__ = fn.__signature__  # type: ignore[attr-defined]
    child.__annotations__ = dict(fn.__annotations__)
    return WorkflowDef(child, name, "placeholder")


def _item_key(item: Any) -> str:
    """A map's item key without the user's key function: the item's JSON. Equal
    items get equal keys, as under any key function; the keys only name items
    in messages (a map whose key function found duplicates among unequal items
    would be reported as diverged)."""
    return json.dumps(item, sort_keys=True, default=str)


def _exception_type(qualname: str) -> type[Exception]:
    module, _, name = qualname.rpartition(".")
    return type(name, (Exception,), {"__module__": module, "__qualname__": name})
