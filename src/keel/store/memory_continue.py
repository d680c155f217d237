"""The in-memory store's continue-as-new: a mixin of :class:`MemoryStore`.

Same rules as the rest of the store: each method does its work under the
store's lock without awaiting, so the switch is atomic.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from keel.core.states import RunState
from keel.errors import RunExistsError, RunFinishedError, RunNotFoundError
from keel.store.base import Lease, NewEvent, NewRun, RunRecord


class MemoryContinue:
    """Continue-as-new methods of :class:`~keel.store.memory.MemoryStore`."""

    _lock: threading.RLock
    _clock: Callable[[], float]
    _runs: dict[str, RunRecord]
    _mailbox: dict[str, list[int]]
    _signals: dict[int, Any]  # signal id -> its mailbox row (record, consumed_seq)

    if TYPE_CHECKING:  # defined by MemoryStore, MemoryChildren and MemoryTasks

        def _check_open(self) -> None: ...
        def _drop_open_tasks(self, run_id: str) -> None: ...
        def _close_family(self, run: RunRecord, now: float, *, wake_parent: bool = ...) -> None: ...
        def _notify(self) -> None: ...
        def _fence(self, lease: Lease, first_seq: int, now: float) -> RunRecord: ...
        def _append(
            self, run_id: str, first_seq: int, events: Sequence[NewEvent], now: float
        ) -> None: ...
        def _insert(self, run: NewRun, now: float) -> RunRecord: ...

    async def continue_run(
        self,
        lease: Lease,
        first_seq: int,
        events: Sequence[NewEvent],
        successor: NewRun,
    ) -> None:
        with self._lock:
            self._check_open()
            now = self._clock()
            run = self._fence(lease, first_seq, now)
            if successor.run_id in self._runs:
                raise RunExistsError([successor.run_id])
            self._append(run.run_id, first_seq, events, now)
            self._runs[run.run_id] = ended = dataclasses.replace(
                run,
                state=RunState.CONTINUED,
                continued_to=successor.run_id,
                next_seq=first_seq + len(events),
                updated_at=now,
                wake_at=None,
                lease_owner=None,
                lease_expires_at=None,
            )
            new = self._insert(successor, now)
            self._runs[new.run_id] = dataclasses.replace(new, cancel_requested=run.cancel_requested)
            # Unconsumed signals move, oldest first, ahead of any the successor gets later.
            kept, moved = [], []
            for sid in self._mailbox[run.run_id]:
                signal = self._signals[sid]
                if signal.consumed_seq is None:
                    signal.record = dataclasses.replace(signal.record, run_id=new.run_id)
                    moved.append(sid)
                else:
                    kept.append(sid)
            self._mailbox[run.run_id] = kept
            self._mailbox[new.run_id] = moved + self._mailbox[new.run_id]
            self._drop_open_tasks(run.run_id)
            # As finish_run for the children the run closes; the parent is not
            # woken: the chain goes on, and its last run's end wakes it.
            self._close_family(ended, now, wake_parent=False)
            self._notify()

    def _tip(self, run_id: str, action: str) -> RunRecord:
        """The live run a signal or cancel of ``run_id`` reaches: the run itself, or
        the tip of its continue-as-new chain (the caller holds the lock)."""
        run = self._runs.get(run_id)
        if run is None:
            raise RunNotFoundError(run_id)
        while run.state is RunState.CONTINUED and run.continued_to is not None:
            successor = self._runs.get(run.continued_to)
            if successor is None:
                break
            run = successor
        if run.state.is_terminal:
            raise RunFinishedError(run.run_id, run.state.value, action)
        return run
