"""Step results stored under user idempotency keys on SQLite
(:class:`keel.store.ports.IdempotencyKeys`)."""

from __future__ import annotations

import sqlite3

from keel.store.sqlite._db import Capability
from keel.store.sqlite._sql import Q


class SQLiteKeys(Capability):
    """:class:`~keel.store.ports.IdempotencyKeys` of
    :class:`~keel.store.sqlite.store.SQLiteStore`."""

    async def get(self, scope: str, key: str) -> bytes | None:
        def op(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(Q["get_idempotent"], (scope, key)).fetchone()
            return None if row is None else bytes(row["result"])

        return await self._db.read(op)

    async def put(self, scope: str, key: str, result: bytes) -> bytes:
        def op(conn: sqlite3.Connection) -> bytes:
            conn.execute(Q["put_idempotent"], (scope, key, result, self._db.clock()))
            return bytes(conn.execute(Q["get_idempotent"], (scope, key)).fetchone()["result"])

        return await self._db.write(op)
