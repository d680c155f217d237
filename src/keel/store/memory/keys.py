"""The in-memory store's idempotency keys (:class:`~keel.store.ports.IdempotencyKeys`)."""

from __future__ import annotations

from keel.store.memory.tables import Tables


class MemoryKeys:
    """Step results under user keys, over the store's :class:`Tables`."""

    def __init__(self, tables: Tables) -> None:
        self._t = tables

    async def get(self, scope: str, key: str, max_age: float | None = None) -> bytes | None:
        with self._t.transaction() as now:
            entry = self._t.keys.get((scope, key))
            if entry is None or _expired(entry, now, max_age):
                return None
            return entry[0]

    async def put(self, scope: str, key: str, result: bytes, max_age: float | None = None) -> bytes:
        with self._t.transaction() as now:
            entry = self._t.keys.get((scope, key))
            if entry is None or _expired(entry, now, max_age):
                entry = self._t.keys[(scope, key)] = (result, now)
            return entry[0]


def _expired(entry: tuple[bytes, float], now: float, max_age: float | None) -> bool:
    """Stored longer ago than ``max_age`` (an age of exactly ``max_age`` is still fresh)."""
    return max_age is not None and now - entry[1] > max_age
