"""The in-memory store's child runs: a mixin of :class:`MemoryStore`.

Same rules as the rest of the store: each method does its work under the
store's lock without awaiting.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING

from keel.core.states import RunState
from keel.errors import RunExistsError
from keel.store._checks import check_children
from keel.store.base import Lease, NewEvent, NewRun, RunRecord


class MemoryChildren:
    """Child-run methods of :class:`~keel.store.memory.MemoryStore`, which sets the state."""

    _lock: threading.RLock
    _clock: Callable[[], float]
    _runs: dict[str, RunRecord]
    _children: dict[str, list[str]]  # parent run id -> its child run ids

    if TYPE_CHECKING:  # defined by MemoryStore

        def _check_open(self) -> None: ...
        def _notify(self) -> None: ...
        def _fence(self, lease: Lease, first_seq: int, now: float) -> RunRecord: ...
        def _append(
            self, run_id: str, first_seq: int, events: Sequence[NewEvent], now: float
        ) -> None: ...
        def _insert(self, run: NewRun, now: float) -> RunRecord: ...

    async def start_children(
        self,
        lease: Lease,
        first_seq: int,
        events: Sequence[NewEvent],
        children: Sequence[NewRun],
    ) -> None:
        check_children(children)
        with self._lock:
            self._check_open()
            now = self._clock()
            run = self._fence(lease, first_seq, now)
            taken = [c.run_id for c in children if c.run_id in self._runs]
            if taken:
                raise RunExistsError(taken)
            self._append(run.run_id, first_seq, events, now)
            self._runs[run.run_id] = dataclasses.replace(
                run, next_seq=first_seq + len(events), updated_at=now
            )
            for child in children:
                self._insert(child, now)
            self._notify()

    def _children_ended(self, run_ids: Collection[str]) -> bool:
        """Whether one of these runs has ended (a parent must not sleep through it)."""
        return any(
            (r := self._runs.get(run_id)) is not None and r.state.is_terminal for run_id in run_ids
        )

    def _close_family(self, run: RunRecord, now: float, *, wake_parent: bool = True) -> None:
        """A run just ended: wake its parent (not when it continued as new: the
        chain goes on); ask the children it closes to cancel."""
        parent = self._runs.get(run.parent_run_id) if run.parent_run_id else None
        if wake_parent and parent is not None and not parent.state.is_terminal:
            self._runs[parent.run_id] = dataclasses.replace(
                parent, wake_at=_due(parent.wake_at, now), updated_at=now
            )
        for child_id in self._children.get(run.run_id, ()):
            child = self._runs[child_id]
            if _cascades(child, run) and not child.state.is_terminal:
                self._runs[child.run_id] = dataclasses.replace(
                    child, cancel_requested=True, wake_at=_due(child.wake_at, now), updated_at=now
                )


def _cascades(child: RunRecord, parent: RunRecord) -> bool:
    """Whether the end of ``parent`` cancels ``child``: 'cancel' children always,
    'wait' children when the parent was cancelled (it does not wait then)."""
    return child.parent_close == "cancel" or (
        child.parent_close == "wait" and parent.state is RunState.CANCELLED
    )


def _due(wake_at: float | None, now: float) -> float:
    return now if wake_at is None else min(wake_at, now)
