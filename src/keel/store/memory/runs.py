"""The in-memory store's runs: creation, leases, the fenced commit of a turn,
cancel requests and snapshots (:class:`~keel.store.ports.RunJournal`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from keel.core.states import RunState
from keel.errors import LeaseLostError, RunExistsError, StoreError
from keel.store._checks import (
    check_children,
    check_claim_limit,
    check_end,
    check_snapshot,
    check_tasks,
    check_ttl,
    check_versions,
)
from keel.store.base import (
    Claimed,
    Lease,
    NewEvent,
    NewRun,
    NewSnapshot,
    RenewOutcome,
    RunRecord,
    SnapshotRecord,
    VersionPairs,
)
from keel.store.memory.tables import Signal, Tables, due
from keel.store.memory.tasks import insert_tasks, tasks_done, tasks_taken
from keel.store.ports import Committed, Continue, Finish, Suspend, Turn


class MemoryRuns:
    """Runs, their journals, leases and fencing, over the store's :class:`Tables`."""

    def __init__(self, tables: Tables) -> None:
        self._t = tables

    async def create(
        self, run: NewRun, *, lease_owner: str | None = None, lease_ttl: float = 30.0
    ) -> tuple[RunRecord, Lease | None, bool]:
        if lease_owner is not None:
            check_ttl(lease_ttl)
        with self._t.transaction() as now:
            existing = self._t.runs.get(run.run_id)
            if existing is not None:
                return existing, None, False
            lease = (
                None if lease_owner is None else Lease(run.run_id, lease_owner, 1, now + lease_ttl)
            )
            record = self._t.insert_run(run, now, lease)
            self._t.notify()
            return record, lease, True

    async def claim(
        self, owner: str, *, limit: int, ttl: float, versions: VersionPairs | None = None
    ) -> list[Claimed]:
        check_claim_limit(limit)
        check_ttl(ttl)
        pairs = check_versions(versions)
        having = None if pairs is None else frozenset(pairs)
        with self._t.transaction() as now:
            due_runs: list[tuple[float, str]] = []
            for r in self._t.runs.values():
                if having is not None and (r.workflow, r.version) not in having:
                    continue
                if r.state in (RunState.PENDING, RunState.SUSPENDED):
                    if r.wake_at is not None and r.wake_at <= now:
                        due_runs.append((r.wake_at, r.run_id))
                elif r.state is RunState.RUNNING and _expired(r, now):
                    due_runs.append((r.lease_expires_at or 0.0, r.run_id))
            due_runs.sort()
            claimed = []
            for _, run_id in due_runs[:limit]:
                old = self._t.runs[run_id]
                run = self._t.update(
                    old,
                    now,
                    state=RunState.RUNNING,
                    lease_owner=owner,
                    lease_token=old.lease_token + 1,
                    lease_expires_at=now + ttl,
                    wake_at=None,
                )
                claimed.append(Claimed(Lease(run_id, owner, run.lease_token, now + ttl), run))
            if claimed:
                self._t.notify()
            return claimed

    async def renew(self, owner: str, leases: Sequence[Lease], ttl: float) -> RenewOutcome:
        check_ttl(ttl)
        with self._t.transaction() as now:
            expires = now + ttl
            lost: set[str] = set()
            cancel: set[str] = set()
            for lease in leases:
                run = self._t.runs.get(lease.run_id)
                if run is None or lease.owner != owner or not _holds(run, lease, now):
                    lost.add(lease.run_id)
                    continue
                # A heartbeat is not a change of the run: updated_at stays.
                self._t.runs[run.run_id] = dataclasses.replace(run, lease_expires_at=expires)
                if run.cancel_requested:
                    cancel.add(run.run_id)
            return RenewOutcome(expires, frozenset(lost), frozenset(cancel))

    async def commit(self, lease: Lease, turn: Turn) -> Committed:
        check_end(lease.run_id, turn.end)
        successor = [turn.end.successor] if isinstance(turn.end, Continue) else []
        check_children([*turn.children, *successor])
        check_tasks(lease.run_id, turn.tasks)
        t = self._t
        with t.transaction() as now:
            # Every check before the first change: a refused turn writes nothing.
            run = self._fence(lease, now, turn.first_seq)
            signal = self._unconsumed(run.run_id, turn.consume_signal)
            taken = [r.run_id for r in (*turn.children, *successor) if r.run_id in t.runs]
            if taken:
                raise RunExistsError(taken)
            tasks_taken(t, run.run_id, turn.tasks)
            t.append(run.run_id, turn.first_seq, turn.events, now)
            if signal is not None:
                signal.consumed_seq = turn.first_seq
            run = t.update(run, now, next_seq=turn.first_seq + len(turn.events))
            for child in turn.children:
                t.insert_run(child, now)
            task_ids = insert_tasks(t, run.run_id, turn.tasks, now)
            if isinstance(turn.end, Suspend):
                self._suspend(run, turn.end, now)
            elif isinstance(turn.end, Finish):
                ended = t.unlease(
                    run, turn.end.state, now, result=turn.end.result, error=turn.end.error
                )
                t.close_family(ended, now)
            elif isinstance(turn.end, Continue):
                self._continue(run, turn.end.successor, now)
            t.notify()
            return Committed(task_ids)

    async def request_cancel(self, run_id: str, cancelled_event: NewEvent) -> RunState:
        t = self._t
        with t.transaction() as now:
            run = t.tip(run_id, "cancel")
            held = run.state is RunState.RUNNING and not _expired(run, now)
            if held or run.next_seq > 1:  # a worker delivers it; cleanup may run
                t.update(run, now, cancel_requested=True, wake_at=due(run.wake_at, now))
                t.notify()
                return run.state
            t.append(run.run_id, run.next_seq, [cancelled_event], now)
            ended = t.unlease(
                run, RunState.CANCELLED, now, next_seq=run.next_seq + 1, cancel_requested=True
            )
            t.close_family(ended, now)
            t.notify()
            return RunState.CANCELLED

    async def save_snapshot(self, lease: Lease, snapshot: NewSnapshot) -> None:
        with self._t.transaction() as now:
            run = self._fence(lease, now)
            check_snapshot(snapshot, run.next_seq)
            self._t.snapshots[run.run_id] = SnapshotRecord(
                run.run_id, snapshot.upto_seq, snapshot.version, snapshot.format, snapshot.data, now
            )

    async def load_snapshot(self, run_id: str) -> SnapshotRecord | None:
        with self._t.transaction():
            return self._t.snapshots.get(run_id)

    # -- the parts of a commit -------------------------------------------------------

    def _fence(self, lease: Lease, now: float, first_seq: int | None = None) -> RunRecord:
        """The run row if ``lease`` holds it (and its journal continues at ``first_seq``)."""
        run = self._t.runs.get(lease.run_id)
        if run is None:
            raise LeaseLostError(lease.run_id, lease.token, "the run does not exist")
        if run.state is not RunState.RUNNING:
            raise LeaseLostError(lease.run_id, lease.token, f"the run is {run.state.value}")
        if run.lease_owner != lease.owner or run.lease_token != lease.token:
            raise LeaseLostError(
                lease.run_id,
                lease.token,
                f"the run is now leased to {run.lease_owner!r} with token {run.lease_token}",
            )
        if not _holds(run, lease, now):
            raise LeaseLostError(lease.run_id, lease.token, "the lease expired")
        if first_seq is not None and run.next_seq != first_seq:
            raise StoreError(
                f"journal of run {lease.run_id!r} continues at seq {run.next_seq}, "
                f"but the write starts at seq {first_seq}"
            )
        return run

    def _unconsumed(self, run_id: str, signal_id: int | None) -> Signal | None:
        if signal_id is None:
            return None
        signal = self._t.signals.get(signal_id)
        if signal is None or signal.record.run_id != run_id or signal.consumed_seq is not None:
            raise StoreError(f"signal {signal_id} is not an unconsumed signal of run {run_id!r}")
        return signal

    def _suspend(self, run: RunRecord, end: Suspend, now: float) -> None:
        t = self._t
        names = frozenset(end.wake_on_signals)
        # No lost wake-up: what it waits for may have happened while it ran.
        waiting = (
            any(
                t.signals[i].consumed_seq is None and t.signals[i].record.name in names
                for i in t.mailbox[run.run_id]
            )
            or tasks_done(t, run.run_id, frozenset(end.wake_on_tasks))
            or t.any_ended(end.wake_on_children)
        )
        wake_at = end.wake_at
        if waiting or (run.cancel_requested and not end.cancel_delivered):
            wake_at = due(wake_at, now)
        t.unlease(run, RunState.SUSPENDED, now, wake_at=wake_at)

    def _continue(self, run: RunRecord, successor: NewRun, now: float) -> None:
        t = self._t
        ended = t.unlease(run, RunState.CONTINUED, now, continued_to=successor.run_id)
        new = t.insert_run(successor, now)
        t.update(new, now, cancel_requested=run.cancel_requested)
        # Unconsumed signals move, oldest first, ahead of any the successor gets later.
        kept, moved = [], []
        for sid in t.mailbox[run.run_id]:
            signal = t.signals[sid]
            if signal.consumed_seq is None:
                signal.record = dataclasses.replace(signal.record, run_id=new.run_id)
                moved.append(sid)
            else:
                kept.append(sid)
        t.mailbox[run.run_id] = kept
        t.mailbox[new.run_id] = moved + t.mailbox[new.run_id]
        # As a Finish for the children the run closes; the parent is not woken:
        # the chain goes on, and its last run's end wakes it.
        t.close_family(ended, now, wake_parent=False)


def _expired(run: RunRecord, now: float) -> bool:
    return run.lease_expires_at is not None and run.lease_expires_at < now


def _holds(run: RunRecord, lease: Lease, now: float) -> bool:
    """Whether ``lease`` is the run's live lease at ``now``."""
    return (
        run.state is RunState.RUNNING
        and run.lease_owner == lease.owner
        and run.lease_token == lease.token
        and run.lease_expires_at is not None
        and run.lease_expires_at >= now
    )
