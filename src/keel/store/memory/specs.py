"""The in-memory store's graph specs (:class:`~keel.store.ports.GraphSpecs`)."""

from __future__ import annotations

import builtins

from keel.store._checks import spec_conflict
from keel.store.memory.tables import Tables


class MemorySpecs:
    """Graph specs by (graph, version), over the store's :class:`Tables`."""

    def __init__(self, tables: Tables) -> None:
        self._t = tables

    async def save(self, workflow: str, version: str, spec: bytes) -> None:
        with self._t.transaction():
            stored = self._t.specs.setdefault((workflow, version), bytes(spec))
            if stored != spec:
                raise spec_conflict(workflow, version)

    async def load(self, workflow: str, version: str) -> bytes | None:
        with self._t.transaction():
            return self._t.specs.get((workflow, version))

    async def list(self, workflow: str | None = None) -> builtins.list[tuple[str, str]]:
        with self._t.transaction():
            return sorted(k for k in self._t.specs if workflow is None or k[0] == workflow)
