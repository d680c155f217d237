"""Step results stored under user idempotency keys on SQLite
(:class:`keel.store.ports.IdempotencyKeys`)."""

from __future__ import annotations

import sqlite3

from keel.store.sqlite._db import Capability
from keel.store.sqlite._sql import Q


class SQLiteKeys(Capability):
    """:class:`~keel.store.ports.IdempotencyKeys` of
    :class:`~keel.store.sqlite.store.SQLiteStore`."""

    async def get(self, scope: str, key: str, max_age: float | None = None) -> bytes | None:
        def op(conn: sqlite3.Connection) -> bytes | None:
            params = {"scope": scope, "key": key, "oldest": self._oldest(max_age)}
            row = conn.execute(Q["get_idempotent"], params).fetchone()
            return None if row is None else bytes(row["result"])

        return await self._db.read(op)

    async def put(self, scope: str, key: str, result: bytes, max_age: float | None = None) -> bytes:
        def op(conn: sqlite3.Connection) -> bytes:
            now = self._db.clock()  # read inside the write: writes are serialised
            oldest = None if max_age is None else now - max_age
            params = {"scope": scope, "key": key, "result": result, "now": now, "oldest": oldest}
            conn.execute(Q["put_idempotent"], params)
            stored = conn.execute(Q["get_idempotent"], {**params, "oldest": None}).fetchone()
            return bytes(stored["result"])

        return await self._db.write(op)

    def _oldest(self, max_age: float | None) -> float | None:
        """The earliest store time a fresh entry may have been stored at."""
        return None if max_age is None else self._db.clock() - max_age
