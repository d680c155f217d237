"""Graph workflows: declared nodes with dependencies, fan-out and fan-in,
routes, rules, approvals and error routes (see :class:`Graph`).

This package holds the declaration side (building, validating, the graph as
data, its version and drawings); running graph runs on the journal is being
built and is not part of the public API yet.
"""

from keel.graph.graphdef import GraphDef
from keel.graph.model import APPROVAL_LABELS, SKIP, Edge, Graph, Node, NodeError, NodeOptions, Param
from keel.graph.spec import from_spec
from keel.graph.workflow import GraphWorkflow

__all__ = [
    "APPROVAL_LABELS",
    "SKIP",
    "Edge",
    "Graph",
    "GraphDef",
    "GraphWorkflow",
    "Node",
    "NodeError",
    "NodeOptions",
    "Param",
    "from_spec",
]
