"""A test environment: a store, an in-process worker and a client on a test clock.

::

    async with TestEnv.memory() as env:
        run = await env.client.start(order_flow, order)
        await env.sleep(3600)            # an hour of workflow time, in milliseconds
        assert await run.result() == "shipped"

Time is skipped three ways, on the memory and SQLite stores (PostgreSQL reads
the server's clock, so a :class:`TestEnv` on it runs on real time and refuses
to move the clock):

- :meth:`TestEnv.sleep` lets workflow time pass: every timer, retry, signal
  timeout, schedule tick and lease expiry in between happens at its own time,
  in order, each turn run to the end before the clock moves on;
- :meth:`TestEnv.advance` jumps at once, as after downtime: what fell due
  meanwhile runs at the new time;
- auto-advance: while the test waits for a result through ``env.client`` (or a
  handle it returned), the clock jumps to the next due time whenever every run
  is waiting on time. Only then: a test that starts a run and then signals it
  is not raced by the clock.

"At rest" is read from the store: no run pending, due, or held by one of this
environment's workers, no due schedule, no dispatched step of a queue served
here due or running, no step attempt running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from keel.client import Client
from keel.core.events import EventType
from keel.core.states import RunState
from keel.errors import ConfigurationError, KeelError
from keel.store.base import RunRecord
from keel.store.memory import MemoryStore
from keel.store.ports import Store
from keel.store.sqlite import SQLiteStore
from keel.testing.clock import TestClock, seconds_of
from keel.testing.fakes import StepMock, mock_step
from keel.worker import Worker
from keel.worker.clock import SYSTEM_CLOCK
from keel.workflow.definitions import StepDef

__all__ = ["StillBusyError", "TestEnv"]

P = ParamSpec("P")
R = TypeVar("R")

#: Seconds of real time :meth:`TestEnv.settle` waits for in-flight work by default.
SETTLE_TIMEOUT = 30.0
_LOOK_EVERY = 0.005  # real seconds between looks while something is in flight
_OPEN = (RunState.PENDING, RunState.SUSPENDED, RunState.RUNNING)


class _Due(str):
    """What keeps the runs from rest is due work no worker has taken yet."""

    __slots__ = ()


class StillBusyError(KeelError, TimeoutError):
    """The runs did not come to rest (every one waiting on time, a signal, or
    ended) within the real-time limit: a step blocked, or a run loops."""


class TestEnv:
    """A started in-process :class:`~keel.Worker` and a :class:`~keel.Client`
    on ``store``, both on ``clock``; ``async with`` starts and stops it.

    ``clock``: a :class:`TestClock` the store was built on (the constructors
    :meth:`memory` and :meth:`sqlite` do that), or ``None`` for real time
    (PostgreSQL). ``worker_options`` go to the worker; the defaults here are
    for tests: ``cache=False`` (every turn replays from the store, so a
    replay bug shows in the test) and ``poll_interval=0.05``. On a test clock
    the worker waits for no timer in process (``inline_wait=0``): every wait
    is a durable wake-up time the environment can see and skip to.
    """

    __test__ = False  # not a pytest test class, whatever its name says

    def __init__(
        self,
        store: Store,
        *,
        clock: TestClock | None = None,
        auto_advance: bool = True,
        settle_timeout: float = SETTLE_TIMEOUT,
        store_factory: Callable[[], Store] | None = None,
        **worker_options: Any,
    ) -> None:
        if clock is not None and not isinstance(clock, TestClock):
            raise ConfigurationError(f"clock must be a keel.testing.TestClock, not {clock!r}")
        if clock is not None and not isinstance(store, MemoryStore | SQLiteStore):
            raise ConfigurationError(
                f"skipped time works on the memory and SQLite stores only: {store.url} reads "
                "its own clock (PostgreSQL uses the server's now()); use clock=None"
            )
        if clock is not None and worker_options.get("inline_wait", 0) != 0:
            raise ConfigurationError(
                "a TestEnv on a test clock runs with inline_wait=0: every wait is a "
                "durable wake-up the clock can skip to"
            )
        self.store = store
        self.clock = clock
        self.auto_advance = auto_advance
        self.settle_timeout = settle_timeout
        self._store_factory = store_factory
        options: dict[str, Any] = {"cache": False, "poll_interval": 0.05}
        if clock is not None:
            options["inline_wait"] = 0.0
        options.update(worker_options)
        self._options = options
        self.worker = self._new_worker(store, options)
        #: Every worker of this environment (see :meth:`start_worker`).
        self.workers: list[Worker] = [self.worker]
        self.client: Client = _EnvClient(self, store, self.worker)
        self._skippers = 0
        self._skipper: asyncio.Task[None] | None = None
        self._started = False

    # --- constructors -------------------------------------------------------------------
    @classmethod
    def memory(cls, *, clock: TestClock | None = None, **options: Any) -> TestEnv:
        """On a fresh :class:`~keel.store.MemoryStore` on ``clock`` (a new
        :class:`TestClock` if not given)."""
        clock = clock or TestClock()
        return cls(MemoryStore(clock=clock.now), clock=clock, **options)

    @classmethod
    def sqlite(
        cls, path: str | os.PathLike[str], *, clock: TestClock | None = None, **options: Any
    ) -> TestEnv:
        """On the SQLite file ``path`` on ``clock`` (a new :class:`TestClock` if not given)."""
        clock = clock or TestClock()
        file = Path(path)

        def make() -> Store:
            return SQLiteStore(file, clock=clock.now)

        return cls(make(), clock=clock, store_factory=make, **options)

    # --- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        if not self._started:
            self._started = True
            await self.worker.start()

    async def stop(self) -> None:
        """Stop every worker (releasing their leases) and close the store."""
        if self._skipper is not None:
            self._skipper.cancel()
            await asyncio.gather(self._skipper, return_exceptions=True)
            self._skipper = None
        for worker in reversed(self.workers):
            await worker.stop()
        await self.store.close()

    async def __aenter__(self) -> TestEnv:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start_worker(self, **options: Any) -> Worker:
        """Start one more worker on this environment's database and clock (as
        another process would be), with the environment's worker options
        overridden by ``options``; stopped with the environment."""
        store = self._store_factory() if self._store_factory is not None else self.store
        worker = self._new_worker(store, {**self._options, **options})
        self.workers.append(worker)
        await worker.start()
        return worker

    def _new_worker(self, store: Store, options: dict[str, Any]) -> Worker:
        clock = self.clock if self.clock is not None else SYSTEM_CLOCK
        return Worker(store, clock=clock, **options)

    # --- fakes -------------------------------------------------------------------------------
    def mock_step(
        self, step: StepDef[P, R], **behaviour: Any
    ) -> AbstractContextManager[StepMock[P, R]]:
        """Replace ``step``'s body inside the ``with`` (``returns=``, ``raises=`` or
        ``side_effect=``): :func:`keel.testing.fakes.mock_step`, which reaches
        every worker of this process, this environment's included."""
        return mock_step(step, **behaviour)

    # --- time -------------------------------------------------------------------------------
    def now(self) -> datetime:
        """Workflow time now (the test clock, or the wall clock without one)."""
        if self.clock is not None:
            return self.clock.datetime_now()
        return datetime.fromtimestamp(SYSTEM_CLOCK.now(), UTC)

    async def sleep(
        self,
        seconds: float | timedelta = 0.0,
        *,
        minutes: float = 0.0,
        hours: float = 0.0,
        days: float = 0.0,
    ) -> None:
        """Let that much workflow time pass: each timer, retry, signal timeout,
        schedule tick and lease expiry in between happens at its own time, and
        the runs come to rest (:meth:`settle`) before the clock moves on."""
        clock = self._require_clock("sleep")
        target = clock.now() + seconds_of(seconds, minutes=minutes, hours=hours, days=days)
        while True:
            due = await self.settle()
            if due is None or due > target:
                break
            await self._jump(clock, max(due, clock.now()))
        await self._jump(clock, target)
        await self.settle()

    async def advance(
        self,
        seconds: float | timedelta = 0.0,
        *,
        minutes: float = 0.0,
        hours: float = 0.0,
        days: float = 0.0,
    ) -> None:
        """Jump that far at once (after the runs came to rest), as after
        downtime: whatever fell due meanwhile runs at the new time (a schedule
        fires its latest missed tick only); then wait for rest again."""
        clock = self._require_clock("advance")
        delta = seconds_of(seconds, minutes=minutes, hours=hours, days=days)
        await self.settle()
        await self._jump(clock, clock.now() + delta)
        await self.settle()

    async def advance_to(self, when: datetime | float) -> None:
        """:meth:`advance` to the moment ``when`` (aware ``datetime`` or epoch seconds)."""
        clock = self._require_clock("advance_to")
        await self.settle()
        await self._jump(clock, when)
        await self.settle()

    async def settle(self, timeout: float | None = None) -> float | None:
        """Wait (real time, up to ``timeout``, default ``settle_timeout``) until
        the runs are at rest: each ended, or waiting on time, a signal, a child
        or a dispatched step of a queue no worker here serves. Returns the next
        time something is due (store clock), or ``None`` if nothing waits on time.

        Raises :class:`StillBusyError`, naming what is still busy, past the limit.
        """
        limit = self.settle_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while True:
            busy, due = await self._look()
            if busy is None:
                return due
            self._nudge(busy)
            if loop.time() > deadline:
                raise StillBusyError(f"not at rest after {limit:g}s of real time: {busy}")
            await self.store.changes.wait(_LOOK_EVERY)

    # --- internals --------------------------------------------------------------------------
    def _require_clock(self, what: str) -> TestClock:
        if self.clock is None:
            raise ConfigurationError(
                f"TestEnv.{what}() needs a test clock: skipped time works on the memory and "
                "SQLite stores; PostgreSQL uses the database server's clock"
            )
        return self.clock

    async def _look(self) -> tuple[str | None, float | None]:
        """(what is busy, or ``None`` if at rest; the next due time)."""
        owners = {w.owner for w in self.workers}
        pairs: set[tuple[str, str]] = set()
        names: set[str] = set()
        queues: set[str] = set()
        for worker in self.workers:
            if worker.active_runs:
                return f"runs being driven: {', '.join(worker.active_runs)}", None
            if worker.tasks.running:
                return "dispatched step attempts running", None
            pairs.update(worker.registry.pairs())
            if worker.tasks.serves:
                queues.update(worker.tasks.limits)
            if worker.schedules is not None:
                names.update(worker.registry.names())
        now = await self.store.now()
        candidates: list[float] = []
        # The order of the reads matters: each transition that moves work out of
        # sight of one read puts it in sight of a later one, in one transaction.
        # (A fired tick's run is created as its schedule moves on; a driver or a
        # task attempt leaves this process after its last write.)
        if names:
            found = await self.store.schedules.due(sorted(names), limit=1)
            if found.due:
                return _Due(f"schedule {found.due[0].schedule_id} is due"), None
            if found.next_fire_at is not None:
                candidates.append(found.next_fire_at)
        for run in await self._open_runs():
            if (run.workflow, run.version) not in pairs:
                continue  # no worker here can take it: not ours to wait for
            if run.state is RunState.RUNNING:
                expires = run.lease_expires_at
                if run.lease_owner in owners or expires is None or expires < now:
                    return f"run {run.run_id} is running", None
                # Held by a worker that is not here (one that died): claimable once expired.
                candidates.append(expires + 0.001)
            elif run.wake_at is not None and run.wake_at <= now:
                return _Due(f"run {run.run_id} is due"), None
            else:
                if run.wake_at is not None:
                    candidates.append(run.wake_at)
                if queues:
                    busy = await self._tasks_of(run, now, owners, queues, candidates)
                    if busy is not None:
                        return busy, None
        return None, min(candidates, default=None)

    async def _tasks_of(
        self,
        run: RunRecord,
        now: float,
        owners: set[str],
        queues: set[str],
        candidates: list[float],
    ) -> str | None:
        """Whether a dispatched step of ``run`` on a queue served here is due or
        running here; adds when the others fall due to ``candidates``."""
        dispatched = [
            e.command
            for e in await self.store.reads.history(run.run_id)
            if e.type == EventType.STEP_DISPATCHED and e.command is not None
        ]
        for command in dispatched:
            task = await self.store.tasks.get(run.run_id, command)
            if task is None or task.queue not in queues:
                continue
            if task.state == "available":
                if task.available_at <= now:
                    return _Due(f"dispatched step {task.step!r} of run {run.run_id} is due")
                candidates.append(task.available_at)
            elif task.state == "leased":
                expires = task.lease_expires_at
                if task.lease_owner in owners or expires is None or expires < now:
                    return f"dispatched step {task.step!r} of run {run.run_id} is running"
                candidates.append(expires + 0.001)
        return None

    async def _jump(self, clock: TestClock, when: datetime | float) -> None:
        """Move the clock, then record the workers' versions as live again, as
        their heartbeats would have during that time (operators' views, such
        as ``RunInfo.waiting``, read them)."""
        clock.advance_to(when)
        for worker in self.workers:
            await self.store.workers.register_versions(
                worker.owner,
                worker.registry.pairs(),
                host=socket.gethostname(),
                pid=os.getpid(),
                live_for=worker.lease_ttl,
            )

    def _nudge(self, busy: str) -> None:
        """Something is due that no worker has taken yet: have them look now
        rather than at their next poll (a notification may have come while
        they were looking)."""
        if isinstance(busy, _Due):
            for worker in self.workers:
                worker.poke()

    async def _open_runs(self) -> list[RunRecord]:
        runs: list[RunRecord] = []
        cursor: str | None = None
        while True:
            page = await self.store.reads.list_runs(state=_OPEN, limit=500, cursor=cursor)
            runs += page.runs
            if page.next_cursor is None:
                return runs
            cursor = page.next_cursor

    @contextlib.asynccontextmanager
    async def _skipping(self) -> AsyncIterator[None]:
        """While inside, jump the clock whenever every run waits on time (auto-advance)."""
        if self.clock is None or not self.auto_advance:
            yield
            return
        self._skippers += 1
        if self._skipper is None or self._skipper.done():
            self._skipper = asyncio.get_running_loop().create_task(
                self._skip(self.clock), name="keel-test-auto-advance"
            )
        try:
            yield
        finally:
            self._skippers -= 1
            if self._skippers == 0 and self._skipper is not None:
                self._skipper.cancel()
                await asyncio.gather(self._skipper, return_exceptions=True)
                self._skipper = None

    async def _skip(self, clock: TestClock) -> None:
        while True:
            busy, due = await self._look()
            if busy is None and due is not None:
                await self._jump(clock, max(due, clock.now()))
                continue
            if busy is not None:
                self._nudge(busy)
            await self.store.changes.wait(_LOOK_EVERY)

    def __repr__(self) -> str:
        return f"<TestEnv {self.store.url} {self.clock!r}>"


class _EnvClient(Client):
    """The environment's client: waiting for a result lets time skip (auto-advance)."""

    def __init__(self, env: TestEnv, store: Store, worker: Worker) -> None:
        super().__init__(store, registry=worker.registry, worker=worker)
        self._env = env

    async def result(self, run_id: str, timeout: float | None = None) -> Any:
        async with self._env._skipping():
            return await super().result(run_id, timeout=timeout)
