"""Graph runs: approval decisions and each node's status.

The run's graph is the imported one when this process has it at the run's
version, else the spec stored under that version (:mod:`keel.graph.stored`),
so these work in a process that never imported the graph.
"""

from __future__ import annotations

from keel.client.base import ClientBase
from keel.errors import ConfigurationError
from keel.graph.approvals import Decision, approval_signal
from keel.graph.graphdef import GraphDef
from keel.graph.status import NodeStatus, node_statuses
from keel.graph.stored import graph_of_run, not_stored


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

    async def nodes(self, run_id: str, *, graph: GraphDef | None = None) -> dict[str, NodeStatus]:
        """Each node of a graph run, in the graph's order: its status (pending,
        running, retrying, dispatched, waiting_for_approval, completed (``cached``
        when the cache served it), failed, skipped, blocked), input, output,
        label, error, attempts and times, folded from the journal (no node runs).
        Sort by ``ended_seq`` for completion order. The graph is the imported one
        or its stored spec (``graph``: the one :meth:`graph` gave for this run,
        not looked up again); raises :class:`ConfigurationError` if the run is
        no graph run, or its spec was never stored and this process has not
        imported it."""
        if graph is None:
            graph = await self.graph(run_id)
        return node_statuses(graph, run_id, await self._client.history(run_id))

    async def graph(self, run_id: str) -> GraphDef:
        """The graph a graph run runs, at its version: imported, or from its
        stored spec (see :meth:`nodes` for the errors)."""
        rec = await self._record(run_id)
        found = await graph_of_run(self.store.specs, self.registry, rec.workflow, rec.version)
        if found is not None:
            return found
        if self.registry.find(rec.workflow, rec.version) is not None:
            raise ConfigurationError(
                f"run {run_id!r} is no graph run: it runs workflow {rec.workflow!r}"
            )
        raise not_stored(run_id, rec.workflow, rec.version)

    async def _decide(
        self, run_id: str, node: str, decision: Decision, actor: str, comment: str | None
    ) -> bool:
        graph = await self.graph(run_id)
        name, payload = approval_signal(graph, node, decision, actor, comment)
        return await self._client.signal(run_id, name, payload, delivery_id=name)
