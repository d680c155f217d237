"""Graph specs by (graph, version) on SQLite (:class:`keel.store.ports.GraphSpecs`)."""

from __future__ import annotations

import builtins
import sqlite3

from keel.store._checks import spec_conflict
from keel.store.sqlite._db import Capability
from keel.store.sqlite._sql import Q


class SQLiteSpecs(Capability):
    """:class:`~keel.store.ports.GraphSpecs` of :class:`~keel.store.sqlite.store.SQLiteStore`."""

    async def save(self, workflow: str, version: str, spec: bytes) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(Q["save_spec"], (workflow, version, spec, self._db.clock()))
            stored = conn.execute(Q["load_spec"], (workflow, version)).fetchone()
            if bytes(stored["spec"]) != spec:
                raise spec_conflict(workflow, version)

        await self._db.write(op)

    async def load(self, workflow: str, version: str) -> bytes | None:
        def op(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(Q["load_spec"], (workflow, version)).fetchone()
            return None if row is None else bytes(row[0])

        return await self._db.read(op)

    async def list(self, workflow: str | None = None) -> builtins.list[tuple[str, str]]:
        def op(conn: sqlite3.Connection) -> builtins.list[tuple[str, str]]:
            rows = conn.execute(Q["list_specs"], {"workflow": workflow}).fetchall()
            return [(str(r[0]), str(r[1])) for r in rows]

        return await self._db.read(op)
