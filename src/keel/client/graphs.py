"""Graph runs: approval decisions and each node's status."""

from __future__ import annotations

from keel.client.base import ClientBase
from keel.graph.approvals import Decision, approval_signal, graph_of
from keel.graph.status import NodeStatus, node_statuses


class GraphsMixin(ClientBase):
    """:class:`~keel.client.Client` methods for graph runs."""

    async def approve(
        self, run_id: str, node: str, *, actor: str, comment: str | None = None
    ) -> bool:
        """Approve the approval node ``node`` of a graph run: the run follows its
        ``approved`` edges. Sent before the run reaches the node, it waits there;
        a second decision on the node is a no-op (returns ``False``). Raises
        :class:`ConfigurationError` if the run's graph has no such approval node."""
        return await self._decide(run_id, node, "approved", actor, comment)

    async def reject(
        self, run_id: str, node: str, *, actor: str, comment: str | None = None
    ) -> bool:
        """Reject the approval node ``node`` of a graph run (see :meth:`approve`)."""
        return await self._decide(run_id, node, "rejected", actor, comment)

    async def nodes(self, run_id: str) -> dict[str, NodeStatus]:
        """Each node of a graph run, in the graph's order: its status (pending,
        running, retrying, dispatched, waiting_for_approval, completed, failed,
        skipped, blocked), output, label, error, attempts and times, folded from
        the journal (no node runs). Sort by ``ended_seq`` for completion order.
        Raises :class:`ConfigurationError` if the run's graph (at its version)
        is not known to this process."""
        rec = await self._record(run_id)
        graph = graph_of(self.registry.find(rec.workflow, rec.version), run_id, "is no graph run")
        return node_statuses(graph, run_id, await self._client.history(run_id))

    async def _decide(
        self, run_id: str, node: str, decision: Decision, actor: str, comment: str | None
    ) -> bool:
        rec = await self._record(run_id)
        wf = self.registry.find(rec.workflow, rec.version)
        name, payload = approval_signal(wf, run_id, node, decision, actor, comment)
        return await self._client.signal(run_id, name, payload, delivery_id=name)
