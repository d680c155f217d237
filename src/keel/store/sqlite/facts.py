"""Facts on SQLite (:class:`keel.store.ports.Facts`): values by content digest."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection

from keel.store._checks import check_digest, check_digests, check_fact
from keel.store.sqlite._db import Capability
from keel.store.sqlite._sql import Q


class SQLiteFacts(Capability):
    """:class:`~keel.store.ports.Facts` of :class:`~keel.store.sqlite.store.SQLiteStore`."""

    async def save(self, digest: str, data: bytes) -> None:
        data = check_fact(digest, data)

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(Q["save_fact"], (digest, data, self._db.clock()))

        await self._db.write(op)

    async def load(self, digest: str) -> bytes | None:
        check_digest(digest)

        def op(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(Q["load_fact"], (digest,)).fetchone()
            return None if row is None else bytes(row["data"])

        return await self._db.read(op)

    async def load_many(self, digests: Collection[str]) -> dict[str, bytes]:
        wanted = check_digests(digests)
        if not wanted:
            return {}

        def op(conn: sqlite3.Connection) -> dict[str, bytes]:
            rows = conn.execute(Q["load_facts"], (json.dumps(wanted),))
            return {str(row["digest"]): bytes(row["data"]) for row in rows}

        return await self._db.read(op)
