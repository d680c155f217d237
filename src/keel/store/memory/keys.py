"""The in-memory store's idempotency keys (:class:`~keel.store.ports.IdempotencyKeys`)."""

from __future__ import annotations

from keel.store.memory.tables import Tables


class MemoryKeys:
    """Step results under user keys, over the store's :class:`Tables`."""

    def __init__(self, tables: Tables) -> None:
        self._t = tables

    async def get(self, scope: str, key: str) -> bytes | None:
        with self._t.transaction():
            return self._t.keys.get((scope, key))

    async def put(self, scope: str, key: str, result: bytes) -> bytes:
        with self._t.transaction():
            return self._t.keys.setdefault((scope, key), result)
