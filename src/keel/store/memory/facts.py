"""The in-memory store's facts (:class:`~keel.store.ports.Facts`)."""

from __future__ import annotations

from collections.abc import Collection

from keel.store._checks import check_digest, check_digests, check_fact
from keel.store.memory.tables import Tables


class MemoryFacts:
    """Values by content digest, over the store's :class:`Tables`."""

    def __init__(self, tables: Tables) -> None:
        self._t = tables

    async def save(self, digest: str, data: bytes) -> None:
        data = check_fact(digest, data)
        with self._t.transaction():
            self._t.facts.setdefault(digest, data)

    async def load(self, digest: str) -> bytes | None:
        check_digest(digest)
        with self._t.transaction():
            return self._t.facts.get(digest)

    async def load_many(self, digests: Collection[str]) -> dict[str, bytes]:
        wanted = check_digests(digests)
        with self._t.transaction():
            return {d: self._t.facts[d] for d in wanted if d in self._t.facts}
