"""Approval decisions: what ``client.approve`` / ``client.reject`` send.

A decision is a signal named ``approval:<node>`` with the delivery id of the
same name, so a second decision for one node is a no-op (the first one
stands) and one sent before the run reaches the node waits in its mailbox.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from keel.core import names
from keel.errors import ConfigurationError
from keel.graph.engine import APPROVAL_SIGNAL
from keel.graph.graphdef import GraphDef
from keel.graph.workflow import GraphWorkflow
from keel.workflow.definitions import WorkflowDef

Decision = Literal["approved", "rejected"]


def graph_of(workflow: WorkflowDef[Any, Any] | None, run_id: str, problem: str) -> GraphDef:
    """The graph a run of ``workflow`` runs; :class:`ConfigurationError` saying
    ``run <id> <problem>`` if it is no graph this process knows."""
    if not isinstance(workflow, GraphWorkflow):
        what = "an unknown workflow" if workflow is None else f"workflow {workflow.name!r}"
        raise ConfigurationError(
            f"run {run_id!r} {problem}: it runs {what}, not a graph known to this process "
            "(import the module that builds the graph)"
        )
    return workflow.graph


def approval_signal(
    workflow: WorkflowDef[Any, Any] | None,
    run_id: str,
    node: str,
    decision: Decision,
    actor: str,
    comment: str | None,
) -> tuple[str, dict[str, Any]]:
    """The signal name and payload of a decision on ``node`` of a run of
    ``workflow`` (the run's graph at its version, or ``None`` if this process
    does not know it); :class:`ConfigurationError` if the graph has no such
    approval node."""
    names.name(node, "approval node", hash_ok=False)
    names.name(actor, "actor")
    if comment is not None:
        names.text(comment, "comment")
    graph = graph_of(workflow, run_id, f"has no approval node {node!r}")
    found = graph.nodes.get(node)
    if found is None or found.kind != "approval":
        approvals = [n for n, d in graph.nodes.items() if d.kind == "approval"]
        raise ConfigurationError(
            f"graph {graph.name!r} has no approval node {node!r} "
            f"(its approvals: {', '.join(approvals) or 'none'})"
        )
    payload = {
        "decision": decision,
        "actor": actor,
        "comment": comment,
        "at": datetime.now(UTC).isoformat(),
    }
    return APPROVAL_SIGNAL.format(node=node), payload
