"""A built graph: validated nodes in topological order, its inputs, spec and version."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from keel.graph.draw import dot, mermaid
from keel.graph.model import Node
from keel.graph.spec import digest, graph_spec


@dataclass(frozen=True)
class GraphDef:
    """An immutable, validated graph (what :meth:`keel.graph.Graph.build` returns)."""

    name: str
    #: Every node, parents before children (declaration order among equals).
    nodes: Mapping[str, Node]
    #: The graph's inputs, in order: what ``client.start`` takes as keywords.
    inputs: tuple[str, ...]
    #: Each input as a keyword-only parameter (annotation, default): what the
    #: graph's entry point declares, so ``client.start`` checks the inputs.
    signature: tuple[inspect.Parameter, ...] = ()

    def to_spec(self) -> dict[str, Any]:
        """The graph as data (see :mod:`keel.graph.spec`)."""
        return graph_spec(self)

    @property
    def version(self) -> str:
        """The digest of the graph's structure: its version."""
        return digest(self.to_spec())

    def to_mermaid(self) -> str:
        """A Mermaid flowchart of the graph (text; render it anywhere Mermaid runs)."""
        return mermaid(self)

    def to_dot(self) -> str:
        """A Graphviz DOT digraph of the graph (text: no Graphviz needed to make it)."""
        return dot(self)
