"""The in-memory store's operator actions (:class:`~keel.store.ports.RunAdmin`)."""

from __future__ import annotations

import builtins
from collections.abc import Collection, Sequence

from keel.core.states import LIVE_STATES, RunState
from keel.errors import (
    KeelError,
    RunCancellingError,
    RunExistsError,
    RunNotFoundError,
    RunNotStuckError,
)
from keel.store._checks import (
    check_append,
    check_bulk,
    check_fork,
    check_forks,
    check_idle_for,
    check_prune,
    timers_to_fire,
)
from keel.store.base import (
    BulkAct,
    BulkPage,
    NewEvent,
    NewFork,
    NewRun,
    RunRecord,
    RunWhere,
    SignalRecord,
)
from keel.store.memory.reads import MemoryReads
from keel.store.memory.runs import MemoryRuns
from keel.store.memory.tables import Signal, Tables


class MemoryAdmin:
    """Terminate, resume, fork and prune, over the store's :class:`Tables`."""

    def __init__(self, tables: Tables) -> None:
        self._t = tables

    async def terminate(self, run_id: str, event: NewEvent) -> RunRecord:
        t = self._t
        with t.transaction() as now:
            run = t.tip(run_id, "terminate")
            t.append(run.run_id, run.next_seq, [event], now)
            ended = t.unlease(
                run,
                RunState.TERMINATED,
                now,
                next_seq=run.next_seq + 1,
                lease_token=run.lease_token + 1,  # fences off a holder
            )
            t.close_family(ended, now)
            t.notify()
            return ended

    async def resume(
        self,
        run_id: str,
        *,
        idle_for: float | None,
        append: Sequence[NewEvent] = (),
        at_seq: int | None = None,
    ) -> RunRecord:
        check_idle_for(idle_for)
        t = self._t
        with t.transaction() as now:
            run = t.tip(run_id, "resume")
            delivered = any(e.type == "cancel_requested" for e in t.events[run.run_id])
            if run.cancel_requested and delivered:
                raise RunCancellingError(run.run_id, "resume")
            if run.state is RunState.RUNNING:
                expired = run.lease_expires_at is not None and run.lease_expires_at < now
                if not expired and idle_for is not None and now - run.updated_at < idle_for:
                    raise RunNotStuckError(
                        run.run_id,
                        f"{run.lease_owner!r} holds its lease and wrote to it "
                        f"{now - run.updated_at:.1f}s ago (less than {idle_for:g}s)",
                    )
            check_append(run.run_id, run.next_seq, append, at_seq)
            if append:
                t.append(run.run_id, run.next_seq, append, now)
                run = t.update(run, now, next_seq=run.next_seq + len(append))
            if run.state is RunState.RUNNING:
                resumed = t.unlease(
                    run,
                    RunState.SUSPENDED,
                    now,
                    wake_at=now,
                    lease_token=run.lease_token + 1,
                    cancel_requested=False,
                )
            else:
                resumed = t.update(run, now, wake_at=now, cancel_requested=False)
            t.notify()
            return resumed

    async def bulk(
        self,
        act: BulkAct,
        *,
        run_ids: Sequence[str] | None = None,
        where: RunWhere | None = None,
        after: str | None = None,
        limit: int = 200,
    ) -> BulkPage:
        ids, _ = check_bulk(act, run_ids, where, limit)
        t = self._t
        runs, reads = MemoryRuns(t), MemoryReads(t)
        # One transaction: the store's (re-entrant) lock is held over the whole
        # page; the single-run actions below never suspend, so nothing else runs
        # in between. Each checks before it writes: a refusal writes nothing.
        with t.transaction():
            cursor = None
            if ids is None:
                page = await reads.list_runs(limit=limit, cursor=after, **(where or {}))
                ids, cursor = [r.run_id for r in page.runs], page.next_cursor
            done: list[RunRecord] = []
            refused: list[tuple[str, KeelError]] = []
            for run_id in ids:
                try:
                    done.append(await self._act(runs, act, run_id))
                except KeelError as exc:
                    refused.append((run_id, exc))
            return BulkPage(done, refused, cursor)

    async def _act(self, runs: MemoryRuns, act: BulkAct, run_id: str) -> RunRecord:
        t = self._t
        if act.action == "terminate":
            assert act.event is not None
            return await self.terminate(run_id, act.event)
        if act.action == "resume":
            if not act.fire_timers:
                return await self.resume(run_id, idle_for=act.idle_for)
            tip = t.tip(run_id, "resume")
            fired = timers_to_fire(t.events.get(tip.run_id, ()))
            return await self.resume(
                tip.run_id, idle_for=act.idle_for, append=fired, at_seq=tip.next_seq
            )
        assert act.event is not None
        await runs.request_cancel(run_id, act.event)
        run = t.runs[run_id]
        while run.continued_to is not None and run.continued_to in t.runs:
            run = t.runs[run.continued_to]  # the request went to the chain's tip
        return run

    async def fork(
        self, run: NewRun, journal: Sequence[NewEvent], *, redeliver_signals: bool
    ) -> RunRecord:
        source_id, cut = check_fork(run)
        t = self._t
        with t.transaction() as now:
            if source_id not in t.runs:
                raise RunNotFoundError(source_id)
            if run.run_id in t.runs:
                raise RunExistsError([run.run_id])
            t.insert_run(run, now)
            t.append(run.run_id, 1, journal, now)
            record = t.update(t.runs[run.run_id], now, next_seq=1 + len(journal))
            if redeliver_signals:
                delivery_of = {sid: key[1] for key, sid in t.deliveries.items()}
                for sid in t.mailbox.get(source_id, ()):
                    old = t.signals[sid]
                    if old.consumed_seq is not None and old.consumed_seq < cut:
                        continue
                    t.last_signal_id += 1
                    new_id = t.last_signal_id
                    rec = old.record
                    t.signals[new_id] = Signal(
                        SignalRecord(new_id, run.run_id, rec.name, rec.payload, rec.created_at)
                    )
                    t.mailbox[run.run_id].append(new_id)
                    if sid in delivery_of:  # the fork is a chain of its own
                        t.deliveries[(run.run_id, delivery_of[sid])] = new_id
            t.notify()
            return record

    async def fork_many(self, forks: Sequence[NewFork]) -> BulkPage:
        check_forks(forks)
        done: list[RunRecord] = []
        refused: list[tuple[str, KeelError]] = []
        # One transaction: the (re-entrant) lock held over every fork; each
        # checks before it writes, so a refusal writes nothing.
        with self._t.transaction():
            for f in forks:
                try:
                    done.append(
                        await self.fork(f.run, f.journal, redeliver_signals=f.redeliver_signals)
                    )
                except KeelError as exc:
                    refused.append((f.run.forked_from or "", exc))
        return BulkPage(done, refused, None)

    async def forks(self, run_id: str) -> builtins.list[RunRecord]:
        with self._t.transaction():
            found = [r for r in self._t.runs.values() if r.forked_from == run_id]
        return sorted(found, key=lambda r: (r.created_at, r.run_id))

    async def prune(
        self,
        *,
        ended_before: float,
        states: Collection[RunState] | None = None,
        limit: int = 500,
        dry_run: bool = False,
    ) -> int:
        wanted = check_prune(ended_before, states, limit)
        t = self._t
        with t.transaction():
            chains: dict[str, list[RunRecord]] = {}
            for r in t.runs.values():
                chains.setdefault(r.chain, []).append(r)
            prunable = sorted(
                (
                    r
                    for r in t.runs.values()
                    if r.state.is_terminal and self._prunable(chains[r.chain], wanted, ended_before)
                ),
                key=lambda r: (r.updated_at, r.run_id),
            )
            if dry_run:
                return len(prunable)
            for r in prunable[:limit]:
                self._delete(r)
            return min(len(prunable), limit)

    def _prunable(
        self, chain: list[RunRecord], wanted: frozenset[RunState], ended_before: float
    ) -> bool:
        """Whether ``chain`` goes whole: every run of it ended before ``ended_before``,
        the chain ended in a ``wanted`` state, no run of it has a live parent or child."""
        t = self._t
        for m in chain:
            if m.state in LIVE_STATES or m.updated_at >= ended_before:
                return False
            if m.state is not RunState.CONTINUED and m.state not in wanted:
                return False
            parent = t.runs.get(m.parent_run_id) if m.parent_run_id else None
            if parent is not None and parent.state in LIVE_STATES:
                return False
            kids = (t.runs[c] for c in t.children.get(m.run_id, ()) if c in t.runs)
            if any(k.state in LIVE_STATES for k in kids):
                return False
        return True

    def _delete(self, run: RunRecord) -> None:
        t = self._t
        run_id = run.run_id
        del t.runs[run_id]
        t.events.pop(run_id, None)
        t.snapshots.pop(run_id, None)
        for sid in t.mailbox.pop(run_id, ()):
            del t.signals[sid]
        t.deliveries = {k: v for k, v in t.deliveries.items() if v in t.signals}
        for key in [k for k in t.task_ids if k[0] == run_id]:
            t.tasks.pop(t.task_ids.pop(key), None)
        t.children.pop(run_id, None)
        if run.parent_run_id is not None and run.parent_run_id in t.children:
            t.children[run.parent_run_id] = [
                c for c in t.children[run.parent_run_id] if c != run_id
            ]
