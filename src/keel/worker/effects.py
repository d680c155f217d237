"""Carries out the actions planned for a run: the one place a driver journals
events into its execution and writes to the store.

Durability rule: events are buffered in the execution's outbox and written
(one fenced transaction) before anything external happens next: before a step
attempt starts, and together with the suspend or finish write. So a step's
result and the run's completion commit together, and no step ever runs on a
value that is not durable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

from keel.core.journal import JournalEntry
from keel.core.replay import Execution
from keel.errors import ControlFlowSwallowedError, RunExistsError
from keel.graph.stored import save_spec
from keel.graph.workflow import GraphWorkflow
from keel.local import Finished
from keel.observe import metrics, tracing
from keel.observe.logs import run_fields
from keel.store.base import Lease, NewEvent, NewRun, NewTask, RunRecord
from keel.store.facts import FactWriter
from keel.store.ports import Store, Turn
from keel.worker.actions import (
    Action,
    Commit,
    ConsumeSignal,
    Continue,
    Dispatch,
    Finish,
    RecordEvent,
    ReportAttempt,
    ReportFailed,
    StartAttempt,
    StartChildren,
    StoreKeyed,
    Suspend,
    WaitUntil,
)
from keel.worker.inflight import Inflight
from keel.worker.plan.ending import failure
from keel.worker.snapshots import Snapshots

log = logging.getLogger("keel.worker")


class RunEffects:
    """One run's journal and store writes, under the lease a driver holds.

    ``ex`` is the run's execution while one is built (the driver replays it;
    :meth:`drop` unwinds it). ``notify`` tells the worker's local waiters that
    the run ended (``None``: it left this worker; re-read it). ``facts`` keeps
    large step results out of the journal rows it writes (the execution keeps
    them in memory, so the worker never reads them back while it holds the run).
    """

    def __init__(
        self,
        store: Store,
        run: RunRecord,
        lease: Lease,
        inflight: Inflight,
        snapshots: Snapshots,
        notify: Callable[[str, Finished | None], None],
        facts: FactWriter,
    ) -> None:
        self.store = store
        self.run = run
        self.lease = lease
        self.inflight = inflight
        self.snapshots = snapshots
        self.notify = notify
        self.facts = facts
        self.ex: Execution | None = None

    def _execution(self) -> Execution:
        ex = self.ex
        assert ex is not None, "no execution to journal into"
        return ex

    # --- performing actions ----------------------------------------------------------
    async def perform(self, actions: Iterable[Action]) -> None:
        """Carry out ``actions`` in order (the common ones first)."""
        for action in actions:
            if isinstance(action, (RecordEvent, ReportAttempt)):
                self.journal((action,))
            elif isinstance(action, Finish):
                await self._finish(action)
            elif isinstance(action, Suspend):
                await self._suspend(action)
            elif isinstance(action, Commit):
                await self.commit()
            elif isinstance(action, ConsumeSignal):
                await self.commit(consume_signal=action.signal_id)
            elif isinstance(action, Dispatch):
                await self._write_rows(tasks=action.tasks)
            elif isinstance(action, StartChildren):
                await self._start_children(action)
            elif isinstance(action, StoreKeyed):
                await self.store.keys.put(action.scope, action.key, action.result, action.max_age)
            elif isinstance(action, Continue):
                await self._continue(action)
            elif isinstance(action, ReportFailed):
                self._log_failed(action.error)
            else:  # StartAttempt, WaitUntil: see start()
                raise TypeError(f"{action!r} is started with start(), not performed")

    def journal(self, actions: Iterable[RecordEvent | ReportAttempt]) -> None:
        """Journal events into the execution (durable with the next write) and
        log failed attempts: what needs no write."""
        ex = self.ex
        assert ex is not None, "no execution to journal into"
        for action in actions:
            if isinstance(action, RecordEvent):
                ex.record(action.command, action.event)
            else:
                self._report(action)

    def start(self, work: Iterable[StartAttempt | WaitUntil], now: float) -> None:
        """Start ``work`` in this worker (``now``: the store's clock it was planned at)."""
        for item in work:
            if isinstance(item, StartAttempt):
                self.inflight.start_attempt(item.command, item.attempt)
            else:
                self.inflight.start_wait(item.command, item.what, item.at - now)

    def deliver_cancel(self) -> None:
        """Journal the cancel request into the workflow; stop the work it discarded.

        Hook for child runs: cancelling descendants could go here, by asking
        the children whose commands ``ex.cancel()`` discarded to cancel.
        """
        ex = self._execution()
        ex.cancel()
        self.inflight.keep_only({c.key for c in ex.pending()})

    # --- fenced writes -----------------------------------------------------------------
    async def commit(self, consume_signal: int | None = None) -> None:
        """Write what is journaled and not yet durable, if anything."""
        ex = self.ex
        assert ex is not None, "no execution to commit"
        entries = ex.take_outbox()
        if not entries:
            return
        turn = Turn(entries[0].seq, await self._rows(entries), consume_signal=consume_signal)
        await self.store.runs.commit(self.lease, turn)
        await self.snapshots.maybe_save(self.lease, ex)  # every event is durable now

    async def save_snapshot(self) -> None:
        """Write a snapshot if one is due (every event of the execution is durable)."""
        await self.snapshots.maybe_save(self.lease, self._execution())

    async def _write_rows(
        self, *, tasks: Sequence[NewTask] = (), children: Sequence[NewRun] = ()
    ) -> None:
        """The step_dispatched events and their tasks commit together; so do
        child_started events and the child runs."""
        ex = self._execution()
        entries = ex.take_outbox()
        assert entries, "step_dispatched/child_started events are recorded with their rows"
        first, events = entries[0].seq, await self._rows(entries)
        turn = Turn(first, events, children=children, tasks=tasks)
        await self.store.runs.commit(self.lease, turn)
        await self.snapshots.maybe_save(self.lease, ex)

    async def _start_children(self, action: StartChildren) -> None:
        for definition in action.definitions:
            if isinstance(definition, GraphWorkflow):
                # Before the child run exists: any process can then draw it.
                await save_spec(self.store.specs, definition)
        if not tracing.enabled():
            await self._write_rows(children=action.runs)
            return
        children = {child.run_id: child.workflow for child in action.runs}
        with tracing.child_start(self.run.run_id, self.run.workflow, children):
            await self._write_rows(children=action.runs)

    async def _suspend(self, suspend: Suspend) -> None:
        ex = self._execution()
        entries = ex.take_outbox()
        first = entries[0].seq if entries else ex.next_seq
        self.ex = None
        if not ex.evict():
            # The code caught WorkflowSuspended and carried on: its state would not
            # survive replay, so the run fails instead of suspending.
            exc = ControlFlowSwallowedError(
                "the workflow caught keel.WorkflowSuspended (e.g. with 'except BaseException') "
                "and did not re-raise it; let Keel's control exceptions through"
            )
            failed, finish = failure(exc)
            await self._write_finish(first, [*await self._rows(entries), failed], finish)
            self._log_failed(exc)
            return
        await self.store.runs.commit(
            self.lease, Turn(first, await self._rows(entries), end=suspend)
        )

    async def _finish(self, finish: Finish) -> None:
        entries = self._execution().take_outbox()
        self.inflight.cancel()
        await self._write_finish(entries[0].seq, await self._rows(entries), finish)

    async def _write_finish(self, first: int, events: list[NewEvent], finish: Finish) -> None:
        await self.store.runs.commit(self.lease, Turn(first, events, end=finish))
        run = self.run
        self.notify(
            run.run_id,
            Finished(run.workflow, run.version, finish.state, finish.result, finish.error),
        )
        await self._ended(str(finish.state))

    async def _continue(self, cont: Continue) -> None:
        entries = self._execution().take_outbox()
        self.inflight.cancel()  # pending commands are discarded, as on cancel
        first = entries[0].seq
        try:
            await self.store.runs.commit(
                self.lease, Turn(first, await self._rows(entries), end=cont)
            )
        except RunExistsError as exc:
            # The successor's id is taken by a run of another chain: nothing was
            # written. The run cannot continue, so it fails and says why.
            failed, finish = failure(exc)
            events = [*await self._rows(entries[:-1]), failed]
            await self.store.runs.commit(self.lease, Turn(first, events, end=finish))
        await self._ended("continued")
        # Waiters in this process re-read the run and follow the chain.
        self.notify(self.run.run_id, None)

    async def fail_early(self, exc: BaseException) -> None:
        """The run fails before an execution exists (its input does not decode,
        its journal does not replay): ``run_failed`` at its next seq."""
        failed, finish = failure(exc)
        await self._write_finish(self.run.next_seq, [failed], finish)
        self._log_failed(exc)

    async def release(self, *, delay: float, cancel_delivered: bool) -> None:
        """Hand the run back, flushing what is journaled, due again in ``delay``
        seconds (``cancel_delivered``: a pending cancel request does not make it
        due sooner)."""
        ex = self.ex
        entries = ex.take_outbox() if ex is not None else []
        first = entries[0].seq if entries else (ex.next_seq if ex else self.run.next_seq)
        end = Suspend(await self.store.now() + delay, cancel_delivered=cancel_delivered)
        await self.store.runs.commit(self.lease, Turn(first, await self._rows(entries), end=end))

    async def _rows(self, entries: Sequence[JournalEntry]) -> list[NewEvent]:
        """The journal rows of ``entries``; a large step result is saved as a fact
        first and its row references it (see :class:`~keel.store.facts.FactWriter`)."""
        return await self.facts.rows(_new_events(entries))

    def drop(self) -> None:
        """Unwind the execution, if there is one (the run has left this driver)."""
        ex, self.ex = self.ex, None
        if ex is not None:
            ex.evict()

    async def _ended(self, outcome: str) -> None:
        """Count the run's end (its duration from creation, by the store clock)."""
        run = self.run
        metrics.run_ended(run.workflow, outcome, await self.store.now() - run.created_at)

    # --- logs --------------------------------------------------------------------------
    def _report(self, report: ReportAttempt) -> None:
        """One WARNING per failed attempt; formatted only if the level is enabled."""
        exc = report.error
        log.warning(
            "run %s (workflow %s): step %r attempt %d/%d failed: %s: %s; " + report.then,
            self.run.run_id,
            self.run.workflow,
            report.step,
            report.attempt,
            report.max_attempts,
            type(exc).__name__,
            exc,
            *report.args,
            extra=run_fields(self.run.run_id, self.run.workflow, report.step, report.attempt),
        )

    def _log_failed(self, exc: BaseException) -> None:
        """The run has failed (written): say so, once."""
        log.error(
            "run %s (workflow %s) failed: %s: %s",
            self.run.run_id,
            self.run.workflow,
            type(exc).__name__,
            exc,
            extra=run_fields(self.run.run_id, self.run.workflow),
        )


def _new_events(entries: Sequence[JournalEntry]) -> list[NewEvent]:
    return [NewEvent(e.type.value, e.command, e.data) for e in entries]
