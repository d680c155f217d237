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

Decision = Literal["approved", "rejected"]


def approval_signal(
    graph: GraphDef,
    node: str,
    decision: Decision,
    actor: str,
    comment: str | None,
) -> tuple[str, dict[str, Any]]:
    """The signal name and payload of a decision on ``node`` of a run of
    ``graph`` (at the run's version); :class:`ConfigurationError` if the graph
    has no such approval node."""
    names.name(node, "approval node", hash_ok=False)
    names.name(actor, "actor")
    if comment is not None:
        names.text(comment, "comment")
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
