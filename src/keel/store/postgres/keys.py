"""Idempotency keys on PostgreSQL (:class:`~keel.store.ports.IdempotencyKeys`)."""

from __future__ import annotations

from dataclasses import dataclass

from keel.errors import StoreError
from keel.store.postgres._sql import DICT, Q
from keel.store.postgres.database import PgDatabase


@dataclass
class PgKeys:
    """Step results stored under user keys, in a :class:`PgDatabase`."""

    db: PgDatabase

    async def get(self, scope: str, key: str, max_age: float | None = None) -> bytes | None:
        params = {"scope": scope, "key": key, "max_age": max_age}
        rows = await self.db.fetch(Q["get_idempotent"], params, DICT)
        return bytes(rows[0]["result"]) if rows else None

    async def put(self, scope: str, key: str, result: bytes, max_age: float | None = None) -> bytes:
        params = {"scope": scope, "key": key, "result": result, "max_age": max_age}
        rows = await self.db.fetch(Q["put_idempotent"], params, DICT)
        if rows:
            return bytes(rows[0]["result"])
        # Lost the race (or found a fresh entry): a new statement (new snapshot)
        # sees the winner's row. Read it whatever its age: it is the one that won.
        stored = await self.get(scope, key)
        if stored is None:
            raise StoreError(f"idempotency key {key!r} of {scope!r} vanished")
        return stored
