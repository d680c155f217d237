"""Drives one claimed run: replay, carry out the live tail, suspend or finish.

Durability rule: events produced by the workflow are buffered in the
execution's outbox and flushed (one fenced transaction) before anything
external happens next: before a step attempt starts, and together with the
suspend or finish write. So a step's result and the run's completion commit
together, and no step ever runs on a value that is not durable.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

import keel.worker.children as ch
import keel.worker.continue_as_new as continue_as_new
import keel.worker.signals as signals
from keel.core import codec
from keel.core.commands import Command, Outcome
from keel.core.events import (
    CommandKind,
    EventType,
    RunCancelled,
    RunCompleted,
    TimerFired,
    TimerStarted,
    encode_data,
    run_failed,
)
from keel.core.journal import JournalEntry
from keel.core.replay import Execution
from keel.core.states import RunState
from keel.errors import (
    ControlFlowSwallowedError,
    KeelError,
    LeaseLostError,
    NondeterminismError,
    SerializationError,
)
from keel.local import Finished
from keel.store.base import Claimed, Lease, NewEvent, NewRun, NewTask
from keel.store.ports import Finish, Suspend, Turn
from keel.worker.attempts import record_attempt
from keel.worker.dispatch import journal_task_outcome, record_dispatch, reuse_keyed_result
from keel.worker.executor import start_attempt
from keel.worker.parking import park
from keel.worker.snapshots import Snapshots
from keel.workflow.context import StepInfo, discard_attempt

if TYPE_CHECKING:
    from keel.worker.worker import Worker

log = logging.getLogger("keel.worker")


@dataclass(frozen=True, slots=True)
class Abandoned:
    """A step attempt this worker stopped waiting for: its result will not be
    journaled, so the step runs again (on this worker or another)."""

    run_id: str
    step: str
    attempt: int
    where: str  # "workflow NAME" (inline) or "queue NAME" (a dispatched step's task)

    def __str__(self) -> str:
        return f"run {self.run_id} ({self.where}) step {self.step!r} attempt {self.attempt}"


@dataclass
class _Inflight:
    key: str
    what: str  # "attempt" | "timer" | "retry"
    attempt: int
    task: asyncio.Task[Any]
    info: StepInfo | None = None  # attempts: what the running step sees


@dataclass
class _Plan:
    progressed: bool = False
    start: list[tuple[Command, int]] = field(default_factory=list)  # (command, attempt)
    waits: list[tuple[Command, str, float]] = field(default_factory=list)  # in-worker waits
    wake: list[float] = field(default_factory=list)  # durable wake-ups if we suspend
    signals: set[str] = field(default_factory=set)
    tasks: set[str] = field(default_factory=set)  # commands of dispatched steps waited on
    dispatch: list[NewTask] = field(default_factory=list)  # step_dispatched recorded, to insert
    children: set[str] = field(default_factory=set)  # child run ids waited on
    new_children: list[NewRun] = field(default_factory=list)  # child_started recorded


class RunDriver:
    """Executes one run while this worker holds its lease."""

    #: ``time.monotonic()`` after which the lease has expired unless renewed.
    #: A heartbeat sets it from when it sent the renewal, before the store's
    #: own moment, so it errs early; a claim (setting ``lease``) from when the
    #: claim came back, late by the claim's round trip.
    lease_deadline: float

    def __init__(self, worker: Worker, claimed: Claimed) -> None:
        self.worker = worker
        self.store = worker.store
        self.lease = claimed.lease  # also sets lease_deadline
        self.run = claimed.run
        self.cancel_requested = claimed.run.cancel_requested
        self.inflight: dict[str, _Inflight] = {}
        self.poke = asyncio.Event()
        self.lost = False
        self._ran_out = False  # see lease_expired
        self.task: asyncio.Task[None] | None = None
        self._execution: Execution | None = None
        self.snapshots = Snapshots(self.store, self.run_id)
        self._on_poke: Callable[[], None] | None = None

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def lease(self) -> Lease:
        return self._lease

    @lease.setter
    def lease(self, lease: Lease) -> None:
        self._lease = lease
        self.lease_deadline = time.monotonic() + self.worker.lease_ttl

    # --- notifications from the worker ------------------------------------------------
    def request_cancel(self) -> None:
        if self.cancel_requested:
            return  # heartbeats repeat it; the workflow gets it once
        self.cancel_requested = True
        self.wake()

    def wake(self) -> None:
        """Interrupt a wait for in-flight work (cancel request, drain)."""
        self.poke.set()
        if self._on_poke is not None:
            self._on_poke()

    def lease_lost(self, why: str = "the heartbeat found it gone") -> None:
        """Another worker may own the run now: stop its step attempts at once
        (before they resume: a paused process resumes them all together),
        then the driver; nothing more is journaled."""
        if self.lost:
            return
        self.lost = True
        self._log_lost(why, self._abandon_attempts())
        if self.task is not None:
            self.task.cancel()

    def lease_expired(self) -> bool:
        """Whether this worker may no longer act for the run: its lease is known
        lost, or has run out by this process's clock. Safe on any thread (a sync
        step's ``cancel_requested()`` asks it) and final once true: a step may
        have acted on the answer, so a late renewal must not undo it."""
        if self.lost or self._ran_out:
            return True
        if time.monotonic() > self.lease_deadline:
            self._ran_out = True  # a one-way latch; a plain store is atomic
            return True
        return False

    def stop_if_overdue(self) -> bool:
        """Give the run up if its lease has run out by this process's clock: a
        renewal would be refused, and another worker may be running it already.
        Returns whether this worker still holds the run."""
        if not self.lease_expired():
            return True
        if not self.lost:
            ttl = self.worker.lease_ttl
            overdue = time.monotonic() - self.lease_deadline
            self.lease_lost(
                f"not renewed for {overdue + ttl:.1f}s (lease TTL {ttl:g}s): "
                "was the process paused or its event loop blocked?"
            )
        return False

    def attempts(self) -> list[Abandoned]:
        """The step attempts started and not journaled (what stopping this run abandons)."""
        return [
            Abandoned(self.run_id, item.info.step, item.attempt, f"workflow {self.run.workflow}")
            for item in self.inflight.values()
            if item.info is not None
        ]

    def _abandon_attempts(self) -> list[Abandoned]:
        """Cancel the in-flight work; a sync step body (which Python cannot
        stop) sees ``keel.cancel_requested()``. Its result is never journaled."""
        running = self.attempts()
        for item in self.inflight.values():
            if item.info is not None:
                discard_attempt(item.info)
            item.task.cancel()
        self.inflight.clear()
        return running

    def _log_lost(self, why: str, abandoned: list[Abandoned]) -> None:
        log.warning(
            "run %s (workflow %s): lease lost (%s); abandoned %s",
            self.run_id,
            self.run.workflow,
            why,
            ", ".join(f"step {a.step!r} attempt {a.attempt}" for a in abandoned)
            or "no step attempt",
        )

    # --- main loop --------------------------------------------------------------------
    async def drive(self) -> None:
        try:
            await self._drive()
        except LeaseLostError as exc:
            if not self.lost:
                self.lost = True
                self._log_lost(f"a journal write was refused: {exc}", self._abandon_attempts())
        except asyncio.CancelledError:
            if not self.lost:
                await self._release_quietly()
            raise
        except Exception as exc:
            if self.worker.give_up(exc):
                return  # nothing to release into a damaged database
            log.exception("run %s: worker error; releasing the run", self.run_id)
            await self._release_quietly(delay=1.0)
        finally:
            self._abandon_attempts()
            if self._execution is not None:
                self._execution.evict()

    async def _drive(self) -> None:
        ex = await self._build()
        if ex is None:
            return
        while True:
            if self.cancel_requested and not ex.cancel_requested:
                self._deliver_cancel(ex)
            if ex.outcome is not None:
                await self._finish(ex)
                return
            now = await self.store.now()
            plan = await self._plan(ex, now)
            if plan.dispatch or plan.new_children:
                # The step_dispatched events and their tasks commit together;
                # so do child_started events and the child runs.
                await self._dispatch(ex, plan.dispatch, plan.new_children)
                if not self.worker.cache:
                    ex = await self._rebuild(ex)
                    if ex is None:
                        return
                continue
            if plan.progressed:
                continue
            if ex.outbox:
                await self._flush(ex)
                if not self.worker.cache:
                    ex = await self._rebuild(ex)
                    if ex is None:
                        return
                    continue
            if self.worker.draining:
                await self._drain(ex, plan, now)
                return
            for cmd, attempt in plan.start:
                self._start_attempt(cmd, attempt)
            for cmd, what, at in plan.waits:
                self._start_wait(cmd, what, at - now)
            if not self.inflight:
                await self._suspend(ex, plan)
                return
            await self._wait_and_record(ex)

    def _deliver_cancel(self, ex: Execution) -> None:
        """Journal the cancel request into the workflow; stop the work it discarded.

        Hook for child runs (not built yet): cancelling descendants belongs
        here, by requesting cancellation of the children whose commands
        ``ex.cancel()`` discarded, in the same turn.
        """
        ex.cancel()
        pending = {c.key for c in ex.pending()}
        for key, item in list(self.inflight.items()):
            if key not in pending:
                del self.inflight[key]
                if item.info is not None:
                    discard_attempt(item.info)  # a sync step can see it and stop
                item.task.cancel()

    # --- building the execution ---------------------------------------------------------
    async def _build(self) -> Execution | None:
        wf = self.worker.registry.find(self.run.workflow, self.run.version)
        if wf is None:
            await self._park()
            return None
        self.snapshots.every, self.snapshots.version = wf.snapshot_every, wf.version
        try:
            args, kwargs = codec.decode_args(
                wf.fn, self.run.input, what=f"input of workflow {wf.name!r}"
            )

            def replay(entries: list[JournalEntry], hashes: Any) -> Execution:
                if self._execution is not None:  # a replay from a snapshot that failed
                    self._execution.evict()
                ex = self._execution = Execution(
                    self.run_id, wf.fn, args, kwargs, entries, self.worker.live,
                    workflow_name=wf.name, recorded_hashes=hashes,
                )  # fmt: skip
                ex.start()
                return ex

            if self.run.next_seq == 1:
                ex = replay([JournalEntry(0, EventType.RUN_STARTED, None, b"{}")], None)
            else:
                ex = await self.snapshots.replay(self.run, replay)
        except (NondeterminismError, SerializationError) as exc:
            await self._fail_early(self.run.next_seq, exc)
            return None
        await self.snapshots.maybe_save(self.lease, ex)
        return ex

    async def _park(self) -> None:
        """This worker lacks the run's workflow version; another one (or a later
        deploy) may have it. Release the run untouched, to be retried later."""
        await park(self.worker, self.lease, self.run)

    async def _rebuild(self, old: Execution) -> Execution | None:
        """No-cache mode: drop the in-memory execution and replay from the store."""
        old.evict()
        self._execution = None
        record = await self.store.reads.get_run(self.run_id)
        if record is None:
            return None
        self.run = record
        return await self._build()

    # --- planning the live tail ------------------------------------------------------------
    async def _plan(self, ex: Execution, now: float) -> _Plan:
        """Decide what to do about each pending command; record what is due now."""
        plan = _Plan()
        to_dispatch: list[Command] = []
        to_start: list[Command] = []
        starting: set[str] = set()  # run ids of to_start
        kids = await ch.started_children(self.store, ex)  # one read for every open child
        for cmd in ex.pending():
            if ex.outcome is not None:
                break
            if cmd.key in self.inflight:
                continue
            kind = cmd.id.kind
            if kind is CommandKind.STEP and cmd.dispatched:
                if await self._plan_task(ex, cmd, now, plan):
                    plan.progressed = True
                    return plan
            elif kind is CommandKind.STEP and getattr(cmd.target, "queue", None) is not None:
                if await reuse_keyed_result(self.store, ex, cmd):
                    plan.progressed = True
                    return plan
                to_dispatch.append(cmd)
            elif kind in (CommandKind.STEP, CommandKind.SIDE_EFFECT):
                attempt = cmd.attempts + 1
                if cmd.retry_at is not None and cmd.retry_at > now:
                    if cmd.retry_at - now <= self.worker.inline_wait:
                        plan.waits.append((cmd, "retry", cmd.retry_at))
                    else:
                        plan.wake.append(cmd.retry_at)
                else:
                    plan.start.append((cmd, attempt))
            elif kind is CommandKind.SLEEP:
                if cmd.fire_at is None:
                    fire_at = now + float(cmd.duration or 0.0)
                    ex.record(cmd, TimerStarted(duration=cmd.duration, fire_at=fire_at))
                if cmd.fire_at is not None and cmd.fire_at <= now:
                    ex.record(cmd, TimerFired())
                    plan.progressed = True
                    return plan
                assert cmd.fire_at is not None
                if cmd.fire_at - now <= self.worker.inline_wait:
                    plan.waits.append((cmd, "timer", cmd.fire_at))
                else:
                    plan.wake.append(cmd.fire_at)
            elif kind is CommandKind.SIGNAL and await self._plan_signal(ex, cmd, now, plan):
                plan.progressed = True
                return plan
            elif kind is CommandKind.CHILD:
                state = await ch.plan_child(
                    self.store, self.run, ex, cmd, self.worker, starting, kids
                )
                if state == "progressed":
                    # Go on: one pass journals every child that has ended (a
                    # fan-in reads each open child once per turn, not per outcome).
                    plan.progressed = True
                    continue
                if state == "start":
                    to_start.append(cmd)
                elif cmd.child_run_id is not None:  # running: the suspend wakes us if it ends
                    # (a child that continued-as-new: the tip of its chain)
                    kid = kids.get(cmd.child_run_id)
                    plan.children.add(kid.run_id if kid is not None else cmd.child_run_id)
        if plan.progressed:
            return plan  # re-planned before anything else happens
        # Recorded last, so that no other write of this plan (a signal's flush)
        # can carry a step_dispatched event without its task.
        for cmd in to_dispatch:
            plan.dispatch.append(record_dispatch(ex, cmd))
        if not to_dispatch:  # one kind of row per write; the children start next round
            for cmd in to_start:
                plan.new_children.append(ch.record_start(ex, cmd, self.run))
        return plan

    # --- dispatched steps ---------------------------------------------------------------
    async def _dispatch(
        self, ex: Execution, tasks: list[NewTask], children: list[NewRun] | None = None
    ) -> None:
        entries = ex.take_outbox()
        assert entries, "step_dispatched/child_started events are recorded with their rows"
        first, events = entries[0].seq, _new_events(entries)
        if tasks:
            await self.store.runs.commit(self.lease, Turn(first, events, tasks=tasks))
        else:
            await self.store.runs.commit(self.lease, Turn(first, events, children=children or []))
        await self.snapshots.maybe_save(self.lease, ex)

    async def _plan_task(self, ex: Execution, cmd: Command, now: float, plan: _Plan) -> bool:
        """A dispatched step: journal its task's outcome if it has one, else wait for it."""
        if await journal_task_outcome(self.store, self.run_id, ex, cmd):
            return True
        plan.tasks.add(cmd.key)  # the suspend wakes us if it finished meanwhile
        return False

    async def _plan_signal(self, ex: Execution, cmd: Command, now: float, plan: _Plan) -> bool:
        signal_id = await signals.receive(self.store, ex, cmd)
        if signal_id is not None:
            await self._flush(ex, consume_signal=signal_id)
            return True
        if signals.wait(ex, cmd, now):
            return True
        plan.signals.add(cmd.id.name)
        if cmd.deadline is not None:
            plan.wake.append(cmd.deadline)
        return False

    # --- in-flight work --------------------------------------------------------------------
    def _start_attempt(self, cmd: Command, attempt: int) -> None:
        info = StepInfo(
            run_id=self.run_id,
            step=cmd.id.name,
            attempt=attempt,
            idempotency_key=f"{self.run_id}:{cmd.key}",
            _expired=self.lease_expired,
        )
        keyed = (
            (self.store, cmd.id.name, cmd.idempotency_key)
            if cmd.idempotency_key is not None
            else None
        )
        task = start_attempt(
            cmd.target,
            cmd.args,
            info,
            self.worker.step_pool,
            on_done=self._attempt_done,
            keyed=keyed,
            leased=self.stop_if_overdue,
        )
        self.inflight[cmd.key] = _Inflight(cmd.key, "attempt", attempt, task, info)

    def _attempt_done(self) -> None:
        """An attempt's task is ending: wake ``_wait_and_record`` if it waits."""
        if self._on_poke is not None:
            self._on_poke()

    def _start_wait(self, cmd: Command, what: str, delay: float) -> None:
        task = asyncio.get_running_loop().create_task(asyncio.sleep(max(0.0, delay)))
        self.inflight[cmd.key] = _Inflight(cmd.key, what, cmd.attempts + 1, task)

    async def _wait_and_record(self, ex: Execution) -> None:
        tasks = [item.task for item in self.inflight.values()]
        if not self.poke.is_set() and not any(t.done() for t in tasks):
            # One future woken by whichever comes first: a finished task or a poke.
            # Attempt tasks call it themselves as they end (_attempt_done);
            # timer and retry waits through a done-callback.
            wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            def wake_up(_: object = None) -> None:
                if not wake.done():
                    wake.set_result(None)

            waits = [item.task for item in self.inflight.values() if item.what != "attempt"]
            for t in waits:
                t.add_done_callback(wake_up)
            self._on_poke = wake_up
            try:
                await wake
            finally:
                self._on_poke = None
                for t in waits:
                    t.remove_done_callback(wake_up)
        self.poke.clear()
        if not self.stop_if_overdue():
            # A sync step may have returned early because cancel_requested() said
            # the lease ran out: nothing that ended under such a lease is
            # journaled. lease_lost() has cancelled this task; end it here.
            raise asyncio.CancelledError
        by_key = {c.key: c for c in ex.pending()}
        for key, item in list(self.inflight.items()):
            if not item.task.done():
                continue
            del self.inflight[key]
            cmd = by_key.get(key)
            if cmd is None or ex.outcome is not None:
                continue  # resolved meanwhile (e.g. cancelled); the outcome is moot
            if item.what == "timer":
                ex.record(cmd, TimerFired())
            elif item.what == "retry":
                pass  # the retry is due: the next plan starts the attempt
            else:
                record_attempt(ex, cmd, item.task, item.attempt, self._clock_now)
            by_key = {c.key: c for c in ex.pending()}

    def _clock_now(self) -> float:
        return self.worker.clock_now()

    # --- durable writes ---------------------------------------------------------------------
    async def _flush(self, ex: Execution, consume_signal: int | None = None) -> None:
        entries = ex.take_outbox()
        if not entries:
            return
        await self.store.runs.commit(
            self.lease, Turn(entries[0].seq, _new_events(entries), consume_signal=consume_signal)
        )
        await self.snapshots.maybe_save(self.lease, ex)  # every event is durable now

    async def _suspend(self, ex: Execution, plan: _Plan, *, now: float | None = None) -> None:
        entries = ex.take_outbox()
        first = entries[0].seq if entries else ex.next_seq
        self._execution = None
        if not ex.evict():
            # The code caught WorkflowSuspended and carried on: its state would not
            # survive replay, so the run fails instead of suspending.
            exc = ControlFlowSwallowedError(
                "the workflow caught keel.WorkflowSuspended (e.g. with 'except BaseException') "
                "and did not re-raise it; let Keel's control exceptions through"
            )
            event, error = run_failed(exc)
            failed = NewEvent(EventType.RUN_FAILED.value, None, encode_data(event))
            await self.store.runs.commit(
                self.lease,
                Turn(
                    first, [*_new_events(entries), failed], end=Finish(RunState.FAILED, error=error)
                ),
            )
            self._log_failed(exc)
            self.worker.notify_finished(
                self.run_id,
                Finished(self.run.workflow, self.run.version, RunState.FAILED, None, error),
            )
            return
        wake = [w for w in plan.wake if math.isfinite(w)]
        if now is not None:
            wake.append(now)
        await self.store.runs.commit(
            self.lease,
            Turn(
                first,
                _new_events(entries),
                end=Suspend(
                    min(wake) if wake else None,
                    wake_on_signals=plan.signals,
                    wake_on_tasks=plan.tasks,
                    wake_on_children=plan.children,
                    # A request the workflow already got must not keep waking the run
                    # while its cleanup sleeps or waits.
                    cancel_delivered=ex.cancel_requested,
                ),
            ),
        )

    async def _drain(self, ex: Execution, plan: _Plan, now: float) -> None:
        """Worker is stopping: let running attempts finish, then release the run
        with the wake-up time it needs, so another worker takes over at once."""
        for item in list(self.inflight.values()):
            if item.what != "attempt":
                item.task.cancel()
                self.inflight.pop(item.key)
        while self.inflight and ex.outcome is None:
            await self._wait_and_record(ex)
        while ex.outcome is None:
            now = await self.store.now()
            plan = await self._plan(ex, now)
            if plan.dispatch or plan.new_children:
                await self._dispatch(ex, plan.dispatch, plan.new_children)
                plan.dispatch, plan.new_children = [], []
                continue
            if not plan.progressed:
                break
        if ex.outcome is not None:
            await self._finish(ex)
            return
        wake = plan.wake + [at for _cmd, _what, at in plan.waits]
        await self._suspend(
            ex,
            _Plan(wake=wake, signals=plan.signals, tasks=plan.tasks, children=plan.children),
            now=now if plan.start else None,
        )

    async def _finish(self, ex: Execution) -> None:
        outcome = ex.outcome
        assert outcome is not None
        if outcome.status != "cancelled":
            # parent_close="wait": the run ends only after those children have.
            # A cancelled run does not wait (a Finish cancels them), and nor
            # does one asked to cancel while it waits: it ends cancelled.
            open_ = await ch.open_waited_children(self.store, ex)
            if open_ and not self.cancel_requested:
                await self._suspend(ex, _Plan(children=open_))
                return
            if open_:
                outcome = Outcome("cancelled")
        if outcome.status == "continued":
            await continue_as_new.continue_as_new(self, ex, outcome)
            return
        result: bytes | None = None
        error: bytes | None = None
        if outcome.status == "completed":
            result = outcome.result
            ex.record(None, RunCompleted(result=msgspec.Raw(result or b"null")))
            state = RunState.COMPLETED
        elif outcome.status == "cancelled":
            ex.record(None, RunCancelled(reason="cancel requested"))
            state = RunState.CANCELLED
        else:
            failure = outcome.error or KeelError("unknown failure")
            event, error = run_failed(failure)
            ex.record(None, event)
            state = RunState.FAILED
        entries = ex.take_outbox()
        for item in self.inflight.values():
            item.task.cancel()
        await self.store.runs.commit(
            self.lease,
            Turn(
                entries[0].seq, _new_events(entries), end=Finish(state, result=result, error=error)
            ),
        )
        if state is RunState.FAILED:
            self._log_failed(failure)
        self.worker.notify_finished(
            self.run_id, Finished(self.run.workflow, self.run.version, state, result, error)
        )

    async def _fail_early(self, next_seq: int, exc: BaseException) -> None:
        failed, error = run_failed(exc)
        event = NewEvent(EventType.RUN_FAILED.value, None, encode_data(failed))
        await self.store.runs.commit(
            self.lease, Turn(next_seq, [event], end=Finish(RunState.FAILED, error=error))
        )
        self._log_failed(exc)
        self.worker.notify_finished(
            self.run_id, Finished(self.run.workflow, self.run.version, RunState.FAILED, None, error)
        )

    def _log_failed(self, exc: BaseException) -> None:
        """The run has failed (written): say so, once."""
        log.error(
            "run %s (workflow %s) failed: %s: %s",
            self.run_id,
            self.run.workflow,
            type(exc).__name__,
            exc,
        )

    async def _release_quietly(self, delay: float = 0.0) -> None:
        """Hand the run back (flushing what is journaled) so another worker continues."""
        ex = self._execution
        try:
            entries = ex.take_outbox() if ex is not None else []
            first = entries[0].seq if entries else (ex.next_seq if ex else self.run.next_seq)
            await asyncio.shield(
                self.store.runs.commit(
                    self.lease,
                    Turn(
                        first,
                        _new_events(entries),
                        end=Suspend(
                            await self.store.now() + delay,
                            cancel_delivered=delay > 0,  # a retry after an error keeps its delay
                        ),
                    ),
                )
            )
        except (LeaseLostError, asyncio.CancelledError):
            pass
        except Exception as exc:
            if not self.worker.give_up(exc):
                log.exception("run %s: could not release the lease", self.run_id)


def _new_events(entries: Sequence[JournalEntry]) -> list[NewEvent]:
    return [NewEvent(e.type.value, e.command, e.data) for e in entries]
