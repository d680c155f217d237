"""Signals on PostgreSQL (:class:`~keel.store.ports.Mailbox`)."""

from __future__ import annotations

from dataclasses import dataclass

from keel.errors import RunCancellingError, StoreError
from keel.store.base import SignalRecord
from keel.store.postgres._sql import DICT, SIGNAL, Q
from keel.store.postgres.database import PgDatabase
from keel.store.postgres.runs import chain_tip


@dataclass
class PgMailbox:
    """Signals sent to runs, buffered in a :class:`PgDatabase` until taken."""

    db: PgDatabase

    async def send(
        self, run_id: str, name: str, payload: bytes, *, delivery_id: str | None = None
    ) -> int | None:
        params = {
            "run_id": run_id,
            "name": name,
            "payload": payload,
            "delivery_id": delivery_id,
            "channel": self.db.channel,
        }
        for _ in range(10):
            rows = await self.db.fetch(Q["send_signal"], params, DICT)
            if rows:
                [row] = rows
                if row["seen"] or (row["id"] is None and not row["cancel_requested"]):
                    return None  # a repeat (maybe concurrent)
                if row["id"] is None:
                    raise RunCancellingError(str(params["run_id"]))
                return int(row["id"])
            if delivery_id is not None:  # a repeat to a run that has ended since?
                seen = {"run_id": run_id, "delivery_id": delivery_id}
                if await self.db.fetch(Q["signal_delivered"], seen):
                    return None
            # Ended or continued-as-new: its chain's live tip (raises if none).
            params["run_id"] = await chain_tip(self.db, run_id, "signal")
        raise StoreError(f"could not signal run {run_id!r}: it keeps changing")

    async def next(self, run_id: str, name: str) -> SignalRecord | None:
        rows = await self.db.fetch(Q["next_signal"], {"run_id": run_id, "name": name}, SIGNAL)
        return rows[0] if rows else None
