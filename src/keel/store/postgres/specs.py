"""Graph specs by (graph, version) on PostgreSQL (:class:`~keel.store.ports.GraphSpecs`)."""

from __future__ import annotations

import builtins
from dataclasses import dataclass

from keel.store._checks import spec_conflict
from keel.store.postgres._sql import DICT, Q
from keel.store.postgres.database import PgDatabase


@dataclass(eq=False)  # hashed by identity: keel.graph.stored remembers saved specs per object
class PgSpecs:
    """Graph specs in a :class:`PgDatabase`."""

    db: PgDatabase

    async def save(self, workflow: str, version: str, spec: bytes) -> None:
        params = {"workflow": workflow, "version": version, "spec": spec}
        rows = await self.db.fetch(Q["save_spec"], params, DICT)
        if bytes(rows[0]["spec"]) != spec:
            raise spec_conflict(workflow, version)

    async def load(self, workflow: str, version: str) -> bytes | None:
        params = {"workflow": workflow, "version": version}
        rows = await self.db.fetch(Q["load_spec"], params, DICT)
        return bytes(rows[0]["spec"]) if rows else None

    async def list(self, workflow: str | None = None) -> builtins.list[tuple[str, str]]:
        rows = await self.db.fetch(Q["list_specs"], {"workflow": workflow}, DICT)
        return [(str(r["workflow"]), str(r["version"])) for r in rows]
