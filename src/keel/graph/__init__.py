"""Graph workflows: declared nodes with dependencies, fan-out and fan-in,
routes, rules, approvals and error routes (see :class:`Graph`).

A built graph is a workflow (:class:`GraphWorkflow`): start it with a client,
run it as a child, approve its approval nodes with ``client.approve``. The
interpreter its runs execute is :mod:`keel.graph.engine`.
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
