"""The in-memory store's journal snapshots: a mixin of :class:`MemoryStore`."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from keel.store._checks import check_snapshot
from keel.store.base import Lease, NewSnapshot, RunRecord, SnapshotRecord


class MemorySnapshots:
    """Snapshot methods of :class:`~keel.store.memory.MemoryStore`: the latest per run."""

    _lock: threading.RLock
    _clock: Callable[[], float]
    _runs: dict[str, RunRecord]
    _snapshots: dict[str, SnapshotRecord]

    if TYPE_CHECKING:  # defined by MemoryStore

        def _check_open(self) -> None: ...
        def _fence(self, lease: Lease, first_seq: int, now: float) -> RunRecord: ...

    async def save_snapshot(self, lease: Lease, snapshot: NewSnapshot) -> None:
        with self._lock:
            self._check_open()
            now = self._clock()
            current = self._runs.get(lease.run_id)
            # The fence without the seq check: a snapshot appends nothing.
            run = self._fence(lease, current.next_seq if current else 0, now)
            check_snapshot(snapshot, run.next_seq)
            self._snapshots[run.run_id] = SnapshotRecord(
                run.run_id, snapshot.upto_seq, snapshot.version, snapshot.format, snapshot.data, now
            )

    async def load_snapshot(self, run_id: str) -> SnapshotRecord | None:
        with self._lock:
            self._check_open()
            return self._snapshots.get(run_id)
