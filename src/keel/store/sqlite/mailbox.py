"""Signals sent to runs on SQLite (:class:`keel.store.ports.Mailbox`)."""

from __future__ import annotations

import sqlite3

from keel.errors import RunCancellingError
from keel.store.base import SignalRecord
from keel.store.sqlite._db import Capability
from keel.store.sqlite._journal import chain_tip
from keel.store.sqlite._rows import signal_record
from keel.store.sqlite._sql import Q


class SQLiteMailbox(Capability):
    """:class:`~keel.store.ports.Mailbox` of :class:`~keel.store.sqlite.store.SQLiteStore`."""

    async def send(
        self, run_id: str, name: str, payload: bytes, *, delivery_id: str | None = None
    ) -> int | None:
        def op(conn: sqlite3.Connection) -> int | None:
            now = self._db.clock()
            if delivery_id is not None:
                seen = {"run_id": run_id, "delivery_id": delivery_id}
                if conn.execute(Q["signal_delivered"], seen).fetchone() is not None:
                    return None  # a repeat: writes nothing (BEGIN IMMEDIATE serialises)
            tip = run_id
            if conn.execute(Q["wake_for_signal"], {"now": now, "run_id": tip}).rowcount == 0:
                # Ended, or continued-as-new: the live run of its chain gets it.
                tip = chain_tip(conn, run_id, "signal")["run_id"]
                if conn.execute(Q["wake_for_signal"], {"now": now, "run_id": tip}).rowcount == 0:
                    raise RunCancellingError(tip)  # live, so its cancel is pending
            params = {"run_id": tip, "name": name, "payload": payload, "now": now}
            cur = conn.execute(Q["insert_signal"], params | {"delivery_id": delivery_id})
            assert cur.lastrowid is not None
            return cur.lastrowid

        return await self._db.write(op, notify=True)

    async def next(self, run_id: str, name: str) -> SignalRecord | None:
        return await self._db.read_one(Q["next_signal"], (run_id, name), signal_record)
