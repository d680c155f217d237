"""The worker: claims runnable runs under leases, drives them, heartbeats, drains."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from math import inf
from typing import TYPE_CHECKING

from keel.core.facts import FACT_THRESHOLD
from keel.errors import ConfigurationError, DatabaseCorruptError, LeaseLostError
from keel.graph.stored import save_specs
from keel.local import Finished
from keel.observe import metrics
from keel.store import open_store
from keel.store.base import Claimed
from keel.store.facts import FactWriter
from keel.store.ports import LivenessLock, Store, Suspend, Turn
from keel.worker.clock import SYSTEM_CLOCK, Clock
from keel.worker.driver import RunDriver
from keel.worker.inflight import Abandoned
from keel.worker.live import SystemLiveSource
from keel.worker.plan.children import MAX_CHILD_DEPTH
from keel.worker.retention import Pruner
from keel.worker.schedules import ScheduleRunner
from keel.worker.tasks import TaskRunner, queue_limits
from keel.worker.threads import StepThreads
from keel.workflow.registry import Registry, default_registry

if TYPE_CHECKING:
    from keel.client import Client

log = logging.getLogger("keel.worker")


def _pruner(worker: Worker, retention: float | timedelta | None, every: float) -> Pruner | None:
    """The worker's pruner, if ``retention`` asks for one (checked here)."""
    if retention is None:
        return None
    seconds = retention.total_seconds() if isinstance(retention, timedelta) else retention
    for name, value in (("retention", seconds), ("prune_every", every)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < inf:
            raise ConfigurationError(f"{name} must be a positive duration, not {value!r}")
    return Pruner(worker, float(seconds), float(every))


class Worker:
    """Executes runs of the registered workflows from one store.

    Use it in-process (``async with Worker(store):``) or through ``keel worker``.

    ``cache=False`` drops each execution after every journal write and replays
    it from the store for the next turn: slower, and what tests should use to
    prove every turn survives a replay.

    ``queues`` makes the worker run dispatched steps (``@step(queue=...)``) of
    those queues: a mapping of queue name to this worker's limit of concurrent
    attempts of that queue, or a list of names (limit ``task_concurrency``
    each); ``task_concurrency`` bounds all its task attempts together. With
    ``queues=None`` it runs no dispatched steps (it still drives runs).

    It claims only runs whose workflow version is registered here, and records
    those versions in the store (``store.workers.register_versions``, refreshed by the
    heartbeat loop) so operators see which versions are live. A run it holds
    anyway without the version (claimed by other means) is *parked*: its lease
    is released and any worker may try it again ``park_delay`` seconds later.
    ``schedules=True`` (default) makes it fire the due ticks of schedules whose
    workflow it has registered; any number of workers may, each tick starts
    one run.
    ``max_child_depth`` is how deeply child workflows may nest: a run at that
    depth that starts a child gets :class:`keel.ChildWorkflowError` instead.
    ``retention`` (seconds or a ``timedelta``; default ``None``: keep every run)
    makes it delete, every ``prune_every`` seconds, the runs that ended longer
    ago than that, with their journals (only runs whose continue-as-new chain,
    parent and children have all ended; see :meth:`keel.Client.prune`).
    ``clock`` is workflow time (see :mod:`keel.worker.clock`): the wall clock,
    or in tests a :class:`keel.testing.TestClock` that the store reads too.
    ``fact_threshold`` (bytes, default 64 KiB): a step result whose encoded
    size is above it is stored once by its sha256 in ``store.facts`` before
    the journal write, and the journal event keeps only the digest (``None``:
    every result stays in the journal). Readers see the full value either way.
    """

    def __init__(
        self,
        store: Store | str,
        *,
        registry: Registry | None = None,
        concurrency: int = 100,
        lease_ttl: float = 30.0,
        poll_interval: float = 0.5,
        inline_wait: float = 1.0,
        step_threads: int = 32,
        cache: bool = True,
        owner: str | None = None,
        queues: Mapping[str, int] | Sequence[str] | None = None,
        task_concurrency: int = 10,
        park_delay: float = 5.0,
        schedules: bool = True,
        max_child_depth: int = MAX_CHILD_DEPTH,
        retention: float | timedelta | None = None,
        prune_every: float = 600.0,
        clock: Clock = SYSTEM_CLOCK,
        fact_threshold: int | None = FACT_THRESHOLD,
    ) -> None:
        for name, value in (
            ("concurrency", concurrency),
            ("step_threads", step_threads),
            ("task_concurrency", task_concurrency),
            ("max_child_depth", max_child_depth),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be a positive integer, not {value!r}")
        for name, fvalue in (
            ("lease_ttl", lease_ttl),
            ("poll_interval", poll_interval),
            ("park_delay", park_delay),
        ):
            if not isinstance(fvalue, int | float) or not fvalue > 0:
                raise ConfigurationError(f"{name} must be a positive number, not {fvalue!r}")
        if not isinstance(inline_wait, int | float) or inline_wait < 0:
            raise ConfigurationError(f"inline_wait must be >= 0, not {inline_wait!r}")
        if not isinstance(clock, Clock):
            raise ConfigurationError(f"clock must be a keel.worker.clock.Clock, not {clock!r}")
        limits = queue_limits(queues, task_concurrency)
        self.store: Store = open_store(store) if isinstance(store, str) else store
        self.facts = FactWriter(self.store.facts, fact_threshold)
        self.registry = registry or default_registry
        self.concurrency = concurrency
        self.lease_ttl = float(lease_ttl)
        self.poll_interval = float(poll_interval)
        self.inline_wait = float(inline_wait)
        self.park_delay = float(park_delay)
        self.missing_versions: set[tuple[str, str]] = set()  # parked for; logged once each
        self.cache = cache
        self.max_child_depth = max_child_depth
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.clock = clock
        self._unwatch_clock: Callable[[], None] = lambda: None
        self.live = SystemLiveSource(clock)
        self.step_pool = StepThreads(step_threads, thread_name_prefix="keel-step")
        self.draining = False
        #: Why this worker gave up, if it did (see :meth:`give_up`).
        self.failure: DatabaseCorruptError | None = None
        self._failed = asyncio.Event()
        self._drivers: dict[str, RunDriver] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._started = False
        self._liveness: LivenessLock | None = None  # see _hold_liveness
        self._next_sweep = 0.0  # monotonic time of the next dead-owner sweep
        self._registered = False  # its versions are in the store (stop() removes them)
        self._finished_waiters: dict[str, list[asyncio.Future[Finished | None]]] = {}
        self.tasks = TaskRunner(self, limits, task_concurrency)
        self.schedules = ScheduleRunner(self) if schedules else None
        self.pruner = _pruner(self, retention, prune_every)

    # --- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        """Open the store and start claiming in the background."""
        if self._started:
            return
        self._started = True
        await self.store.open()
        await self._check_clock()
        self._unwatch_clock = self.clock.watch(self.poke)
        self._liveness = await self._hold_liveness()
        await self._register_versions()
        metrics.track_slots(id(self), lambda: (len(self._drivers), len(self.tasks.running)))
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._claim_loop(), name="keel-claim"),
            loop.create_task(self._heartbeat_loop(), name="keel-heartbeat"),
        ]
        if self.tasks.serves:
            self._tasks.append(loop.create_task(self.tasks.loop(), name="keel-task-claim"))
        if self.schedules is not None:
            self._tasks.append(loop.create_task(self.schedules.loop(), name="keel-schedules"))
        if self.pruner is not None:
            self._tasks.append(loop.create_task(self.pruner.loop(), name="keel-pruner"))

    async def stop(self, timeout: float = 30.0) -> list[Abandoned]:
        """Drain: stop claiming, let running step attempts (and dispatched-step
        attempts) finish (up to ``timeout``), release every lease still held,
        then close the store.

        Returns the attempts still running at the deadline, each logged as
        abandoned: their results are not journaled and the steps run again
        elsewhere. An async one is cancelled; a sync one sees
        ``keel.cancel_requested()`` and does not hold up the process's exit. A
        task attempt cut off is not reported to the store: its task lease
        expires, which consumes that attempt."""
        if not self._started or self._stopped.is_set():
            return []
        abandoned: list[Abandoned] = []
        self.draining = True
        self._wake.set()
        self.tasks.wake()
        if self.schedules is not None:
            self.schedules.wake()
        # The run claim loop and the schedule loop end at their next look; one in
        # the middle of a claim finishes it first, handing back what it took (see
        # _claim_loop), so no run stays leased to a stopped worker until expiry.
        looking = [t for t in self._tasks if t.get_name() in ("keel-claim", "keel-schedules")]
        if looking:
            await asyncio.wait(looking, timeout=timeout)
        for driver in self._drivers.values():
            driver.wake()
        pending: list[asyncio.Task[None]] = [
            d.task for d in self._drivers.values() if d.task is not None
        ]
        pending += self.tasks.jobs()
        if pending:
            _done, late = await asyncio.wait(pending, timeout=timeout)
            abandoned = self._abandoned(late)
            for attempt in abandoned:
                log.warning(
                    "drain timeout (%gs) passed: abandoned %s; it will run again elsewhere",
                    timeout,
                    attempt,
                )
            for task in late:  # past the deadline: release what is still held
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=5.0)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.step_pool.shutdown(wait=False, cancel_futures=True)
        if self._liveness is not None:  # after the leases went back: nothing left to take
            await self._liveness.release()
        if self._registered:  # its versions are no longer live
            try:
                await self.store.workers.forget_versions(self.owner)
            except Exception:
                log.exception("could not remove this worker's versions from the store")
        await self.store.close()
        metrics.track_slots(id(self), None)
        self._unwatch_clock()
        self._stopped.set()
        return abandoned

    def _abandoned(self, late: set[asyncio.Task[None]]) -> list[Abandoned]:
        """The step attempts still running in the drivers and task jobs ``late``."""
        found: list[Abandoned] = []
        for driver in self._drivers.values():
            if driver.task in late:
                found += driver.attempts()
        for item in self.tasks.running.values():
            if item.job in late:
                t = item.task
                found.append(Abandoned(t.run_id, t.step, t.attempt, f"queue {t.queue}"))
        return found

    async def run(self) -> None:
        """Start and work until :meth:`stop` is called (e.g. from a signal handler).

        Raises :class:`~keel.errors.DatabaseCorruptError`, once stopped, if the
        worker gave up on a damaged database.
        """
        await self.start()
        await self.wait_stopped_or_failed()
        if self.failure is not None:
            await self.stop()
            raise self.failure

    async def wait_stopped_or_failed(self) -> None:
        """Wait until :meth:`stop` has run or the worker gave up (see :meth:`give_up`)."""
        loop = asyncio.get_running_loop()
        waits = {loop.create_task(self._stopped.wait()), loop.create_task(self._failed.wait())}
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()

    def give_up(self, exc: BaseException) -> bool:
        """If ``exc`` says the database is damaged, stop working and return True.

        Retrying cannot mend a corrupt file: the loops would log the same error
        every poll interval forever. It is logged once; claiming stops at once;
        :meth:`run` (and so ``keel worker``) then stops and raises it.
        """
        if not isinstance(exc, DatabaseCorruptError):
            return False
        if self.failure is None:
            self.failure = exc
            log.error("stopping: %s", exc)
            self.draining = True
            self._wake.set()
            self.tasks.wake()
            if self.schedules is not None:
                self.schedules.wake()
            self._failed.set()
        return True

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- used by clients in the same process ------------------------------------------
    def client(self) -> Client:
        """A :class:`keel.Client` on this worker's store that hands new runs to this worker."""
        from keel.client import Client

        return Client(self.store, registry=self.registry, worker=self)

    def has_capacity(self) -> bool:
        return self._started and not self.draining and len(self._drivers) < self.concurrency

    def adopt(self, claimed: Claimed) -> None:
        """Drive a run this worker already holds the lease of (a local start)."""
        self._spawn(claimed)

    def poke_cancel(self, run_id: str) -> None:
        """A cancel was requested for a run: tell its driver now, not at the next heartbeat."""
        driver = self._drivers.get(run_id)
        if driver is not None:
            driver.request_cancel()

    def poke_lost(self, run_id: str, why: str) -> None:
        """An operator took the run from its holder: stop driving it now."""
        driver = self._drivers.get(run_id)
        if driver is not None:
            driver.lease_lost(why)

    def notify_finished(self, run_id: str, outcome: Finished | None = None) -> None:
        """Tell local waiters a run ended (``None``: it left this worker; re-read it)."""
        for fut in self._finished_waiters.pop(run_id, []):
            if not fut.done():
                fut.set_result(outcome)

    def finished_waiter(self, run_id: str) -> asyncio.Future[Finished | None] | None:
        """A future resolved when this worker finishes ``run_id``; ``None`` if it
        is not driving that run."""
        if run_id not in self._drivers:
            return None
        fut: asyncio.Future[Finished | None] = asyncio.get_running_loop().create_future()
        self._finished_waiters.setdefault(run_id, []).append(fut)
        return fut

    def clock_now(self) -> float:
        # Retry times are computed right after an attempt fails; the store's
        # clock for SQLite/memory is this machine's clock (or the same test clock).
        return self.clock.now()

    def poke(self) -> None:
        """Have the claim, task and schedule loops look again now, not at their
        next poll: the clock jumped (a test moved it), or a test knows
        something is due."""
        self._wake.set()
        self.tasks.wake()
        if self.schedules is not None:
            self.schedules.wake()

    async def _check_clock(self) -> None:
        """A clock other than the wall clock must be the store's clock too: a
        store that reads another one (PostgreSQL reads the server's) would never
        see its jumps, and timers would fire on the wrong time."""
        if self.clock is SYSTEM_CLOCK:
            return
        store_now, now = await self.store.now(), self.clock.now()
        if abs(store_now - now) > 1.0:
            await self.store.close()
            raise ConfigurationError(
                f"the worker's clock {self.clock!r} reads {now:.3f} but the store "
                f"{self.store.url} reads {store_now:.3f}: give the store the same clock "
                "(MemoryStore(clock=c.now), SQLiteStore(path, clock=c.now)); PostgreSQL "
                "uses the database server's clock, so skipped time cannot work on it"
            )

    @property
    def active_runs(self) -> list[str]:
        return sorted(self._drivers)

    # --- internals ----------------------------------------------------------------------
    def _spawn(self, claimed: Claimed) -> None:
        driver = RunDriver(self, claimed)
        self._drivers[claimed.run.run_id] = driver
        driver.task = asyncio.get_running_loop().create_task(
            self._drive(driver), name=f"keel-run-{claimed.run.run_id}"
        )

    async def _drive(self, driver: RunDriver) -> None:
        try:
            await driver.drive()
        except asyncio.CancelledError:
            pass
        finally:
            was_full = len(self._drivers) >= self.concurrency
            if self._drivers.get(driver.run_id) is driver:
                del self._drivers[driver.run_id]
                self.notify_finished(driver.run_id)  # anyone still waiting re-reads the store
            if was_full:
                self._wake.set()  # capacity freed: claim more

    async def _claim_loop(self) -> None:
        batch = min(self.concurrency, 32)
        while not self.draining:
            got = 0
            try:
                await self._sweep_dead_owners()
                capacity = self.concurrency - len(self._drivers)
                if self._liveness is not None and not self._liveness.held:
                    capacity = 0  # others may be expiring our leases: take no more
                if capacity > 0:
                    asked = time.perf_counter()
                    claimed = await self.store.runs.claim(
                        self.owner,
                        limit=min(capacity, batch),
                        ttl=self.lease_ttl,
                        versions=self.registry.pairs(),
                    )
                    metrics.claimed("run", time.perf_counter() - asked)
                    got = len(claimed)
                    for i, c in enumerate(claimed):
                        if self.draining:  # stopping meanwhile: hand the rest back now
                            await self._release(claimed[i:])
                            break
                        running = self._drivers.get(c.run.run_id)
                        if running is not None and self._adopted(running, c):
                            continue
                        self._spawn(c)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.give_up(exc):
                    return
                log.exception("claiming runs failed; retrying")
                await asyncio.sleep(self.poll_interval)
                continue
            if got and got == batch:
                continue
            self._wake.clear()
            waiter = asyncio.get_running_loop().create_task(self._wake.wait())
            changed = asyncio.get_running_loop().create_task(
                # Not woken by runs finishing: a sequential stream of runs does
                # not cost a claim read per run.
                self.store.changes.wait_for_work(self._idle_wait())
            )
            try:
                await asyncio.wait({waiter, changed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                changed.cancel()

    async def _hold_liveness(self) -> LivenessLock | None:
        """Take this worker's liveness lock, if the store offers one (see
        :meth:`keel.store.ports.WorkerRegistry.hold_liveness`): while it is held no
        other worker takes our runs before their leases expire; once this process
        dies they may at once."""
        try:
            return await self.store.workers.hold_liveness(self.owner)
        except Exception as exc:
            if self.give_up(exc):  # a damaged file: logged once, and the worker stops
                return None
            log.exception("could not take the liveness lock; runs of this worker move by TTL")
            return None

    async def _sweep_dead_owners(self) -> None:
        """At most once per poll interval, expire the leases of dead workers, so
        that this claim (and the others', woken by the store) takes their runs."""
        # Without a lock of its own (see _hold_liveness) a worker still sweeps; a
        # store without liveness locks finds no dead owners.
        if time.monotonic() < self._next_sweep:
            return
        self._next_sweep = time.monotonic() + self.poll_interval
        await self.store.workers.expire_dead_owners()

    def _idle_wait(self) -> float:
        """How long the claim loop may sleep: a poll interval, but never past the
        next dead-owner sweep (wake-ups in between must not push it back)."""
        return max(0.0, min(self.poll_interval, self._next_sweep - time.monotonic()))

    def _adopted(self, running: RunDriver, claimed: Claimed) -> bool:
        """We claimed a run we are still driving. Our own lease ran out (heartbeats
        stalled): the driver adopts the new token, since only it has written, so
        its journal view is right. Otherwise (our clock says the lease had well
        over a third of its TTL left) it was taken from us while we held it (an
        operator's resume of a run stuck here): the driver stops as on any lost
        lease, and the run is driven afresh from its journal."""
        # A third of the TTL apart: our heartbeat keeps more than that left, and a
        # lease the store found expired has about none left by our clock either.
        if not running.lease_valid_here(self.lease_ttl / 3):
            log.warning(
                "run %s: re-claimed while still driving it; adopting the new lease",
                claimed.run.run_id,
            )
            running.lease = claimed.lease
            return True
        running.lease_lost("it was taken from this worker (an operator's resume)")
        return False

    async def _release(self, claimed: Sequence[Claimed]) -> None:
        """Give back runs claimed but not driven (due at once, for another worker)."""
        for c in claimed:
            running = self._drivers.get(c.run.run_id)
            if running is not None and self._adopted(running, c):  # as in _claim_loop
                continue
            try:
                await asyncio.shield(
                    self.store.runs.commit(
                        c.lease, Turn(c.run.next_seq, [], end=Suspend(await self.store.now()))
                    )
                )
            except LeaseLostError:
                pass
            except Exception as exc:
                if not self.give_up(exc):
                    log.exception("run %s: could not release the lease", c.run.run_id)

    async def _register_versions(self) -> None:
        """Record (refresh) the versions this worker has; live for a lease TTL,
        three heartbeats. A failure is logged: claims do not depend on it.

        The specs of its graphs are stored first (once per process), so every
        graph run a worker executes can be drawn and checked without its code."""
        try:
            await save_specs(self.store.specs, self.registry)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # retried at the next heartbeat; runs do not need specs
            if not self.give_up(exc):
                log.exception("could not store the specs of this worker's graphs")
        try:
            await self.store.workers.register_versions(
                self.owner,
                self.registry.pairs(),
                host=socket.gethostname(),
                pid=os.getpid(),
                live_for=self.lease_ttl,
            )
            self._registered = True
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not self.give_up(exc):  # a damaged database is reported once, by give_up
                log.exception("could not record this worker's versions in the store")

    async def _heartbeat_loop(self) -> None:
        interval = self.lease_ttl / 3
        while True:
            await asyncio.sleep(interval)
            self._stop_overdue_runs()
            await self._register_versions()
            try:
                await self.tasks.renew()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.give_up(exc):
                    return
                log.exception("task heartbeat failed")
            drivers = [d for d in self._drivers.values() if not d.lost]
            if not drivers:
                continue
            try:
                sent = [d.lease for d in drivers]
                sent_at = time.monotonic()
                outcome = await self.store.runs.renew(self.owner, sent, self.lease_ttl)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.give_up(exc):
                    return
                log.exception("heartbeat failed")
                continue
            for driver, lease in zip(drivers, sent, strict=True):
                if self._drivers.get(driver.run_id) is not driver or driver.lease is not lease:
                    continue  # finished or re-claimed while the renewal was in flight
                if driver.run_id in outcome.lost:
                    driver.lease_lost("the heartbeat found it gone")
                    continue
                driver.lease_deadline = sent_at + self.lease_ttl
                if driver.run_id in outcome.cancel_requested:
                    driver.request_cancel()

    def _stop_overdue_runs(self) -> None:
        """Give up the runs whose lease has run out by this process's clock.

        Called as the heartbeat wakes, before anything else can run: after a
        pause (SIGSTOP, a blocked loop) a sync step's thread and the driver's
        own waits must not carry on while a renewal that would fail is in
        flight. (An async step's body asks for itself each time it resumes.)
        """
        for driver in list(self._drivers.values()):
            driver.stop_if_overdue()
