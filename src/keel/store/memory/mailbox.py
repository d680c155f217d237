"""The in-memory store's mailbox: signals sent to runs (:class:`~keel.store.ports.Mailbox`)."""

from __future__ import annotations

from keel.errors import RunCancellingError
from keel.store.base import SignalRecord
from keel.store.memory.tables import Signal, Tables, due


class MemoryMailbox:
    """Signals buffered per run, over the store's :class:`Tables`."""

    def __init__(self, tables: Tables) -> None:
        self._t = tables

    async def send(
        self, run_id: str, name: str, payload: bytes, *, delivery_id: str | None = None
    ) -> int | None:
        t = self._t
        with t.transaction() as now:
            addressed = t.runs.get(run_id)
            key = None
            if addressed is not None and delivery_id is not None:
                key = (addressed.chain, delivery_id)
                if key in t.deliveries:
                    return None  # a repeat: the chain has this signal already
            run = t.tip(run_id, "signal")
            if run.cancel_requested:
                raise RunCancellingError(run.run_id)
            t.last_signal_id += 1
            sid = t.last_signal_id
            if key is not None:
                t.deliveries[key] = sid
            t.signals[sid] = Signal(SignalRecord(sid, run.run_id, name, payload, now))
            t.mailbox[run.run_id].append(sid)
            # Commit before wake: the run is due in the same step as the signal.
            t.update(run, now, wake_at=due(run.wake_at, now))
            t.notify()
            return sid

    async def next(self, run_id: str, name: str) -> SignalRecord | None:
        with self._t.transaction():
            for sid in self._t.mailbox.get(run_id, ()):
                signal = self._t.signals[sid]
                if signal.consumed_seq is None and signal.record.name == name:
                    return signal.record
            return None
