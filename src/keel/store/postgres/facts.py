"""Facts on PostgreSQL (:class:`~keel.store.ports.Facts`): values by content digest."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from keel.store._checks import check_digest, check_digests, check_fact
from keel.store.postgres._sql import DICT, Q
from keel.store.postgres.database import PgDatabase


@dataclass
class PgFacts:
    """Values stored once by content digest, in a :class:`PgDatabase`."""

    db: PgDatabase

    async def save(self, digest: str, data: bytes) -> None:
        data = check_fact(digest, data)
        # Not group-committed: a fact is large and written alone, before the
        # journal write that references it.
        await self.db.fetch(Q["save_fact"], {"digest": digest, "data": data})

    async def load(self, digest: str) -> bytes | None:
        found = await self.load_many([check_digest(digest)])
        return found.get(digest)

    async def load_many(self, digests: Collection[str]) -> dict[str, bytes]:
        wanted = check_digests(digests)
        if not wanted:
            return {}
        rows = await self.db.fetch(Q["load_facts"], {"digests": wanted}, DICT)
        return {str(row["digest"]): bytes(row["data"]) for row in rows}
