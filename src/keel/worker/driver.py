"""Drives one claimed run: replay, then turns of plan-then-act until it suspends
or ends.

Each turn the gatherer (:mod:`keel.worker.gather`) reads what the planners
need, the pure planners (:mod:`keel.worker.plan`) decide, and the executor
(:class:`~keel.worker.effects.RunEffects`) journals and writes; this module
only sequences them, starts the in-worker work, and watches the lease.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TYPE_CHECKING

from keel.core.replay import Execution
from keel.errors import LeaseLostError, NondeterminismError, SerializationError
from keel.observe import metrics, tracing
from keel.observe.logs import run_fields
from keel.store.base import Claimed, Lease, RunRecord
from keel.worker.actions import WaitUntil
from keel.worker.effects import RunEffects
from keel.worker.gather import gather_turn, open_children
from keel.worker.inflight import Abandoned, Inflight
from keel.worker.parking import report_parked
from keel.worker.plan import ending, steps, timers
from keel.worker.plan.turn import Settings, TurnPlan, plan_turn, suspension
from keel.worker.replaying import Replayer, replay_run
from keel.worker.snapshots import Snapshots

if TYPE_CHECKING:
    from keel.worker.worker import Worker

log = logging.getLogger("keel.worker")

__all__ = ["RunDriver"]


class RunDriver:
    """Executes one run while this worker holds its lease."""

    #: ``time.monotonic()`` after which the lease has expired unless renewed.
    #: A heartbeat sets it from when it sent the renewal, before the store's
    #: own moment, so it errs early; a claim (setting ``lease``) from when the
    #: claim came back, late by the claim's round trip.
    lease_deadline: float

    def __init__(self, worker: Worker, claimed: Claimed) -> None:
        run = claimed.run
        self.worker = worker
        self.store = worker.store
        self.cancel_requested = run.cancel_requested
        self.lost = False
        self._ran_out = False  # see lease_expired
        self.task: asyncio.Task[None] | None = None
        self.settings = Settings(worker.inline_wait, worker.max_child_depth)
        self.inflight = Inflight(
            run.run_id,
            run.workflow,
            worker.store,
            worker.step_pool,
            expired=self.lease_expired,
            leased=self.stop_if_overdue,
            sleep=worker.clock.sleep,
        )
        self.snapshots = Snapshots(worker.store, run.run_id, worker.facts)
        self.effects = RunEffects(
            worker.store,
            run,
            claimed.lease,
            self.inflight,
            self.snapshots,
            worker.notify_finished,
            worker.facts,
        )
        self.lease = claimed.lease  # sets lease_deadline
        #: The trace context stored with the run (read only when tracing is on).
        self.traceparent: str | None = None

    @property
    def run(self) -> RunRecord:
        return self.effects.run

    @property
    def run_id(self) -> str:
        return self.effects.run.run_id

    @property
    def lease(self) -> Lease:
        return self.effects.lease

    @lease.setter
    def lease(self, lease: Lease) -> None:
        self.effects.lease = lease
        self.lease_deadline = time.monotonic() + self.worker.lease_ttl

    # --- notifications from the worker ------------------------------------------------
    def request_cancel(self) -> None:
        if self.cancel_requested:
            return  # heartbeats repeat it; the workflow gets it once
        self.cancel_requested = True
        self.wake()

    def wake(self) -> None:
        """Interrupt a wait for in-flight work (cancel request, drain)."""
        self.inflight.wake()

    def lease_lost(self, why: str = "the heartbeat found it gone") -> None:
        """Another worker may own the run now: stop its step attempts at once
        (before they resume: a paused process resumes them all together),
        then the driver; nothing more is journaled."""
        if self.lost:
            return
        self.lost = True
        self._log_lost(why, self.inflight.abandon())
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

    def lease_valid_here(self, margin: float) -> bool:
        """Whether, by this process's clock, the lease it holds has more than
        ``margin`` seconds left (unlike :meth:`lease_expired`, asking latches nothing)."""
        if self.lost or self._ran_out:
            return False
        return time.monotonic() + margin < self.lease_deadline

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
        return self.inflight.attempts()

    def _log_lost(self, why: str, abandoned: list[Abandoned]) -> None:
        metrics.lease_lost(self.run.workflow)
        log.warning(
            "run %s (workflow %s): lease lost (%s); abandoned %s",
            self.run_id,
            self.run.workflow,
            why,
            ", ".join(f"step {a.step!r} attempt {a.attempt}" for a in abandoned)
            or "no step attempt",
            extra=run_fields(self.run_id, self.run.workflow),
        )

    # --- main loop --------------------------------------------------------------------
    async def drive(self) -> None:
        """One lease turn of the run: a ``keel.run`` span when tracing is on,
        continuing the trace stored with the run (its steps' spans nest in it)."""
        if not tracing.enabled():
            await self._turn()
            return
        started = time.time_ns()
        try:
            self.traceparent = (
                tracing.adopted_traceparent(self.run_id) or await self._stored_traceparent()
            )
        except asyncio.CancelledError:  # as in _turn: hand the run back first
            if not self.lost:
                await self._release_quietly()
            raise
        run = self.run
        turn = tracing.begin_turn(
            self.traceparent, run.run_id, run.workflow, self.worker.owner, started
        )
        # Children started this turn continue the trace from this span.
        self.settings = Settings(
            self.settings.inline_wait, self.settings.max_child_depth, turn.traceparent
        )
        error: BaseException | None = None
        try:
            await self._turn()
        except BaseException as exc:
            error = exc
            raise
        finally:
            tracing.end_turn(turn, error)

    async def _stored_traceparent(self) -> str | None:
        try:
            return await tracing.stored_traceparent(self.store, self.run_id)
        except Exception as exc:  # tracing must never stop a run: the turn goes on untraced
            log.debug("run %s: could not read its trace context: %s", self.run_id, exc)
            return None

    async def _turn(self) -> None:
        try:
            await self._drive()
        except LeaseLostError as exc:
            if not self.lost:
                self.lost = True
                self._log_lost(f"a journal write was refused: {exc}", self.inflight.abandon())
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
            self.inflight.abandon()
            self.effects.drop()
            self.inflight.close()

    async def _drive(self) -> None:
        ex = await self._build()
        if ex is None:
            return
        effects, inflight = self.effects, self.inflight
        while True:
            if self.cancel_requested and not ex.cancel_requested:
                effects.deliver_cancel()
            if ex.outcome is not None:
                await self._end(ex)
                return
            plan = await self._plan(ex)
            if plan.rows:
                await effects.perform(plan.rows)
                if not self.worker.cache:
                    ex = await self._rebuild()
                    if ex is None:
                        return
                continue
            if plan.progressed:
                continue
            if ex.outbox:
                await effects.commit()
                if not self.worker.cache:
                    ex = await self._rebuild()
                    if ex is None:
                        return
                    continue
            if self.worker.draining:
                await self._drain(ex)
                return
            effects.start(plan.work, plan.now)
            if not inflight.items:
                await effects.perform([suspension(plan.wake, cancel_delivered=ex.cancel_requested)])
                return
            await self._wait_and_record(ex)

    async def _plan(self, ex: Execution) -> TurnPlan:
        """Read, plan one pass over the pending commands, and journal what it
        decided now (stopping once the workflow has ended)."""
        pending = ex.pending()
        reads = await gather_turn(self.store, self.run_id, pending)
        plan = plan_turn(pending, self.inflight.items, reads, self.effects.run, self.settings)
        for actions in plan.journal:
            if ex.outcome is not None:
                break
            await self.effects.perform(actions)
        return plan

    async def _wait_and_record(self, ex: Execution) -> None:
        """Wait for in-flight work to end (or a poke); journal how it ended."""
        await self.inflight.wait()
        if not self.stop_if_overdue():
            # A sync step may have returned early because cancel_requested() said
            # the lease ran out: nothing that ended under such a lease is
            # journaled. lease_lost() has cancelled this task; end it here.
            raise asyncio.CancelledError
        # Journaling one outcome resolves only its own command: the map holds.
        by_key = {c.key: c for c in ex.pending()}
        for item in self.inflight.take_done():
            cmd = by_key.get(item.key)
            if cmd is None or ex.outcome is not None:
                continue  # resolved meanwhile (e.g. cancelled); the outcome is moot
            if item.what == "attempt":
                ended = item.ended()
                now = jitter = 0.0
                if ended.error is not None:  # a retry's time: this worker's clock, a draw
                    now, jitter = self.worker.clock_now(), random.random()
                journal = steps.plan_attempt_ended(
                    cmd,
                    item.attempt,
                    ended,
                    now,
                    jitter,
                    started_at=item.started_at,
                    worker=self.worker.owner,
                )
                self.effects.journal(journal)
            elif item.what == "timer":
                self.effects.journal(timers.plan_fired(cmd))
            # else: a retry is due; the next plan starts the attempt

    async def _drain(self, ex: Execution) -> None:
        """Worker is stopping: let running attempts finish, then release the run
        with the wake-up time it needs, so another worker takes over at once."""
        self.inflight.stop_waits()
        while self.inflight and ex.outcome is None:
            await self._wait_and_record(ex)
        while ex.outcome is None:
            plan = await self._plan(ex)
            if plan.rows:
                await self.effects.perform(plan.rows)
                continue
            if not plan.progressed:
                break
        if ex.outcome is not None:
            await self._end(ex)
            return
        waits = [w for w in plan.work if isinstance(w, WaitUntil)]
        suspend = suspension(
            [*plan.wake, *waits],
            cancel_delivered=ex.cancel_requested,
            due_at=plan.now if len(waits) < len(plan.work) else None,  # attempts to start
        )
        await self.effects.perform([suspend])

    async def _end(self, ex: Execution) -> None:
        """The workflow has ended: finish the run, wait for its children, or continue it."""
        outcome = ex.outcome
        assert outcome is not None
        run = self.run
        version = run.version
        if outcome.status == "continued":
            registry = self.worker.registry
            current = registry.find(run.workflow) or registry.find(run.workflow, run.version)
            version = current.version if current is not None else run.version
        actions = ending.plan_end(
            outcome,
            run,
            # parent_close="wait": read here, not by the turn's gatherer, because
            # once the workflow has returned its journal takes no child events.
            open_children=await open_children(self.store, ex)
            if outcome.status != "cancelled"
            else (),
            cancel_requested=self.cancel_requested,
            cancel_delivered=ex.cancel_requested,
            version=version,
            traceparent=self.traceparent,
        )
        await self.effects.perform(actions)

    # --- building the execution ---------------------------------------------------------
    async def _build(self) -> Execution | None:
        run = self.run
        wf = self.worker.registry.find(run.workflow, run.version)
        if wf is None:
            # This worker lacks the run's workflow version; another one (or a
            # later deploy) may have it. Release the run untouched, to be retried
            # later: it cannot deliver a pending cancel request either, so that
            # must not make the run due at once again.
            await self.effects.release(delay=self.worker.park_delay, cancel_delivered=True)
            report_parked(self.worker, run)
            return None
        self.snapshots.every, self.snapshots.version = wf.snapshot_every, wf.version
        try:
            replaying = time.perf_counter()
            replayer = Replayer(wf, run.run_id, run.input, self.worker.live)
            ex = await replay_run(run, replayer, self.snapshots)
            if run.next_seq > 1:  # a journal beyond run_started was replayed
                metrics.replayed(run.workflow, time.perf_counter() - replaying)
        except (NondeterminismError, SerializationError) as exc:
            await self.effects.fail_early(exc)
            return None
        self.effects.ex = ex
        await self.effects.save_snapshot()
        return ex

    async def _rebuild(self) -> Execution | None:
        """No-cache mode: drop the in-memory execution and replay from the store."""
        self.effects.drop()
        record = await self.store.reads.get_run(self.run_id)
        if record is None:
            return None
        self.effects.run = record
        return await self._build()

    async def _release_quietly(self, delay: float = 0.0) -> None:
        """Hand the run back (flushing what is journaled) so another worker
        continues; after an error, due again in ``delay`` seconds."""
        try:
            await asyncio.shield(self.effects.release(delay=delay, cancel_delivered=delay > 0))
        except (LeaseLostError, asyncio.CancelledError):
            pass
        except Exception as exc:
            if not self.worker.give_up(exc):
                log.exception("run %s: could not release the lease", self.run_id)
