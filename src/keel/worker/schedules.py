"""The schedule loop of a worker: fire the due ticks of schedules whose workflow
this worker has registered.

Every worker runs one; they may all look at the same due tick, and the
store's compare-and-set lets exactly one of them start its run. The loop
sleeps until the earliest next fire time (so a due tick waits for no poll);
creating or resuming a schedule anywhere wakes it through the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from keel.core import cron
from keel.observe import tracing
from keel.schedules import plan_tick, tick_run
from keel.store.base import NewRun, ScheduleRecord

if TYPE_CHECKING:
    from keel.worker.worker import Worker

log = logging.getLogger("keel.worker")

BATCH = 32  # due schedules read per look
#: Seconds between looks at least, when other writes wake the loop before a tick
#: is due: a busy SQLite or memory store notifies often, and rarely of schedules.
MIN_GAP = 0.1
#: Longest sleep: notifications only cut latency, this catches any they miss.
BACKSTOP = 1.0


class ScheduleRunner:
    """Fires due schedules for one worker (see the module docstring)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.store = worker.store
        self.fired = 0  # ticks this worker started a run for (for tests and metrics)
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def loop(self) -> None:
        loop = asyncio.get_running_loop()
        backstop = max(self.worker.poll_interval, BACKSTOP)
        while not self.worker.draining:
            # Cleared before looking, not before sleeping: a wake-up that arrives
            # while we look must cut the next sleep short, not be lost.
            self._wake.clear()
            delay = backstop
            try:
                found = await self.store.schedules.due(self.worker.registry.names(), limit=BATCH)
                failed = False
                for rec in found.due:
                    if self.worker.draining:
                        return
                    try:
                        await self.fire(rec, found.now)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:  # one bad schedule must not hold up the others
                        if self.worker.give_up(exc):
                            return
                        log.exception("schedule %s: firing failed; retrying", rec.schedule_id)
                        failed = True
                if found.due and not failed:
                    continue  # look again at once: the fired ones have moved on
                if found.next_fire_at is not None and not failed:
                    delay = min(backstop, max(found.next_fire_at - found.now, 0.0))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.worker.give_up(exc):
                    return
                log.exception("looking for due schedules failed; retrying")
            started = loop.time()
            # The narrowest wake-up: a schedule created or resumed (the tick's own
            # time is the delay).
            await self._sleep(self.store.changes.wait_for_schedules, delay)
            early = delay - (loop.time() - started)
            if early > 0 and not self.worker.draining:
                # Woken by some write before the tick: keep a gap between looks.
                await self._sleep(asyncio.sleep, min(MIN_GAP, early))

    async def _sleep(
        self, waiter: Callable[[float], Coroutine[Any, Any, None]], delay: float
    ) -> None:
        """``waiter(delay)``, cut short by :meth:`wake` (drain, or a test's clock jump)."""
        if delay <= 0 or self._wake.is_set():
            return
        woken = asyncio.ensure_future(self._wake.wait())
        waiting = asyncio.ensure_future(waiter(delay))
        try:
            await asyncio.wait({woken, waiting}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            waiting.cancel()

    async def fire(self, rec: ScheduleRecord, now: float) -> bool:
        """Handle one due schedule at ``now`` (store clock); return whether this worker
        did (``False``: another worker did it first, or it changed meanwhile)."""
        assert rec.next_fire_at is not None
        wf = self.worker.registry.find(rec.workflow)
        if wf is None:  # unregistered since the look: another worker will fire it
            return False
        tick, following = plan_tick(rec, now)
        skipped = await self._skip_reason(rec, tick, now)
        run: NewRun | None = None
        if skipped:
            fired = await self._fire(rec, tick, following, None)
        else:
            # The run's trace starts here, as a client's start begins one.
            run_id = cron.tick_run_id(rec.schedule_id, tick)
            with tracing.schedule_start(run_id, wf.name, rec.schedule_id) as span:
                parent = None if span is None else tracing.traceparent(span)
                run = tick_run(wf, rec, tick, traceparent=parent)
                fired = await self._fire(rec, tick, following, run)
                if span is not None:
                    span.set_attribute(tracing.SCHEDULE_FIRED, fired)
        if fired and run is not None:
            self.fired += 1
            log.info("schedule %s: started run %s", rec.schedule_id, run.run_id)
        elif fired:
            when = datetime.fromtimestamp(tick, UTC).isoformat()
            log.info("schedule %s: skipped the tick of %s (%s)", rec.schedule_id, when, skipped)
        return fired

    async def _fire(
        self, rec: ScheduleRecord, tick: float, following: float | None, run: NewRun | None
    ) -> bool:
        assert rec.next_fire_at is not None
        return await self.store.schedules.fire(
            rec.schedule_id, expected=rec.next_fire_at, tick=tick, next_fire_at=following, run=run
        )

    async def _skip_reason(self, rec: ScheduleRecord, tick: float, now: float) -> str:
        """Why this tick starts no run ("" if it does)."""
        if rec.catchup_window is not None and now - tick > rec.catchup_window:
            return f"{now - tick:.0f}s late, past the catch-up window of {rec.catchup_window:g}s"
        if rec.overlap == "skip" and rec.last_run_id is not None:
            last = await self.store.reads.get_run(rec.last_run_id)
            if last is not None and not last.state.is_terminal:
                return f"run {rec.last_run_id} is still {last.state.value}"
        return ""
