"""Crash at every write: does a workflow survive a worker dying at any point?

:func:`crash_every_write` runs the workflow once without a crash and numbers
the writes its worker makes (:data:`~keel.testing.crash_store.WRITES`). Then,
for every write k, it runs the workflow again from scratch on a fresh store
and crashes the worker right *before* write k (it never lands) and, in
another run, right *after* it (it landed; the worker dies before it sees the
answer). The crashed worker is abandoned where it stands: no cleanup, no
lease release, and a fence refuses anything it still tries to write. The
store's clock (an injected one: no sleeping) then moves past its lease, a
second worker takes the run over and finishes it. Each crash point checks:

- the run ends as the uncrashed run did (same result, or same failure);
- no step body ran again once its completion (or that attempt's failure) was
  journaled; a step that ran again because its completion was *not* yet
  journaled is Keel's at-least-once, counted in the report, not a failure;
- every run's final journal replays cleanly against the code;
- the caller's ``invariant`` holds after every step execution and at the end,
  so the report says at which write, after which step and attempt, the
  workflow's own code broke it (a non-idempotent step that charged twice).

Time is skipped, not waited for: the workers wait inline for nothing
(``inline_wait=0``), and whenever no run can proceed before a time (a
durable sleep, a retry, an expired lease) the store clock jumps to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec

from keel.client import Client
from keel.core.events import EventType
from keel.core.states import RunState
from keel.errors import ConfigurationError
from keel.replay import check_journal
from keel.store.base import RunRecord, TaskRecord
from keel.store.memory import MemoryStore
from keel.store.ports import Store
from keel.store.sqlite import SQLiteStore
from keel.testing.crash_counting import Invariant, Scene, attributed, counting
from keel.testing.crash_report import (
    CrashFailure,
    CrashPoint,
    CrashReport,
    RunOutcome,
    StepExecution,
)
from keel.testing.crash_store import CrashAt, FencedStore, Landed, When, Write
from keel.worker.replaying import journal_of
from keel.worker.worker import Worker
from keel.workflow.definitions import WorkflowDef
from keel.workflow.registry import Registry, default_registry

__all__ = ["assert_survives_crashes", "crash_every_write"]

StoreKind = Literal["memory", "sqlite"]

RUN_ID = "crash-test"
#: The workers' lease TTL, in store-clock seconds (the clock jumps past it).
LEASE_TTL = 30.0
_POLL = 0.002  # how often workers and the harness look again (real seconds)
_TEMPLATE = "migrated.db"
_STUCK = 0.5  # real seconds runs may stay stuck before the run is called unfinished
_WHENS: tuple[When, ...] = ("before", "after")
_OPEN = [RunState.PENDING, RunState.RUNNING, RunState.SUSPENDED]


async def crash_every_write(
    workflow: WorkflowDef[Any, Any],
    *args: Any,
    store: StoreKind = "memory",
    invariant: Invariant | None = None,
    reset: Callable[[], object] | None = None,
    registry: Registry | None = None,
    timeout: float = 30.0,
    **kwargs: Any,
) -> CrashReport:
    """Run ``workflow(*args, **kwargs)`` uncrashed, then crashed before and
    after each of its writes; return what every run found (see the module doc).

    ``store``: ``"memory"`` or ``"sqlite"`` (a fresh file per run, in a
    temporary directory). ``invariant`` is called after every step execution
    (on the step's thread for a sync step) and once the run has ended;
    ``reset`` before every run, to clear what the steps recorded (the
    invariant's state). ``registry`` holds the workflow and its steps
    (default: the global one). ``timeout``: real seconds one run may take.
    Workflow arguments named like these options must be passed positionally.
    The workflow must end on its own (signals are not sent).
    """
    if not isinstance(workflow, WorkflowDef):
        raise ConfigurationError(f"crash_every_write() needs a @keel.workflow, not {workflow!r}")
    if store not in ("memory", "sqlite"):
        raise ConfigurationError(f"store must be 'memory' or 'sqlite', not {store!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ConfigurationError(f"timeout must be a positive number of seconds, not {timeout!r}")
    for name, fn in (("invariant", invariant), ("reset", reset)):
        if fn is not None and not callable(fn):
            raise ConfigurationError(f"{name}= takes a function, not {fn!r}")
    tester = _Tester(workflow, args, kwargs, store, invariant, reset, registry, float(timeout))
    return await tester.run()


async def assert_survives_crashes(
    workflow: WorkflowDef[Any, Any],
    *args: Any,
    store: StoreKind = "memory",
    invariant: Invariant | None = None,
    reset: Callable[[], object] | None = None,
    registry: Registry | None = None,
    timeout: float = 30.0,
    **kwargs: Any,
) -> CrashReport:
    """:func:`crash_every_write`, raising ``AssertionError`` with the whole
    report if any check failed; returns the report otherwise."""
    report = await crash_every_write(
        workflow,
        *args,
        store=store,
        invariant=invariant,
        reset=reset,
        registry=registry,
        timeout=timeout,
        **kwargs,
    )
    report.assert_passed()
    return report


# --- one run ------------------------------------------------------------------------------


class _Clock:
    """The store clock of one run: real time at the start, then moved only forward."""

    def __init__(self) -> None:
        self.value = time.time()

    def __call__(self) -> float:
        return self.value

    def advance_to(self, when: float) -> None:
        self.value = max(self.value, when)


@dataclass
class _Ran:
    """What one run from scratch produced."""

    outcome: RunOutcome
    writes: list[Write]  # the first worker's
    crashed_at: Write | None
    scene: Scene
    failures: list[CrashFailure]


class _Worker:
    """A worker of one run, its fenced store, and how it dies."""

    def __init__(
        self, label: str, inner: Store, tester: _Tester, landed: Landed, crash: CrashAt | None
    ) -> None:
        self.label = label
        self.inner = inner
        self.store = FencedStore(inner, label=label, landed=landed, crash=crash, die=self._die)
        self.worker = Worker(
            self.store,
            registry=tester.registry,
            lease_ttl=LEASE_TTL,
            poll_interval=_POLL,
            inline_wait=0.0,
            owner=f"keel-crash-test-{label}",
            queues=tester.queues or None,
            schedules=False,
        )
        self._abandoned: list[asyncio.Task[Any]] = []

    @property
    def dead(self) -> bool:
        return self.store.gate.dead

    async def start(self, scene: Scene) -> None:
        with attributed(scene, self.label):
            await self.worker.start()

    def _die(self) -> None:
        """Like kill -9, in this process: stop every loop and abandon every run
        and step attempt where it stands (private parts of the worker: a
        crash is not something a worker offers to do)."""
        w = self.worker
        tasks: list[asyncio.Task[Any]] = list(w._tasks)
        for driver in list(w._drivers.values()):
            driver.lease_lost("the worker crashed (keel.testing.crash_every_write)")
            if driver.task is not None:
                tasks.append(driver.task)
        tasks += w.tasks.jobs()
        for task in tasks:
            task.cancel()
        w.step_pool.shutdown(wait=False, cancel_futures=True)
        self._abandoned = tasks

    async def finish(self, timeout: float) -> None:
        """Stop it (a crashed one: wait for what it left behind to end)."""
        if not self.dead:
            await self.worker.stop(timeout=timeout)
            return
        current = asyncio.current_task()
        await asyncio.gather(
            *(t for t in self._abandoned if t is not current), return_exceptions=True
        )
        # A sync step body already running when the worker died goes on to its
        # end (a thread cannot be stopped); let it, so its effects land in this
        # run rather than the next. A body that never returns is left behind.
        waited = asyncio.to_thread(self.worker.step_pool.shutdown, True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waited, timeout)
        await self.inner.close()


class _Tester:
    def __init__(
        self,
        workflow: WorkflowDef[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        store: StoreKind,
        invariant: Invariant | None,
        reset: Callable[[], object] | None,
        registry: Registry | None,
        timeout: float,
    ) -> None:
        self.workflow = workflow
        self.args = args
        self.kwargs = kwargs
        self.kind = store
        self.invariant = invariant
        self.reset = reset
        self.registry = registry or default_registry
        self.timeout = timeout
        self.registries = [self.registry] + (
            [default_registry] if self.registry is not default_registry else []
        )
        self.queues = sorted(
            {
                q
                for reg in self.registries
                for name in reg.step_names()
                if (q := reg.get_step(name).queue) is not None
            }
        )
        self.directory: Path | None = None
        self._n = 0

    async def run(self) -> CrashReport:
        with contextlib.ExitStack() as stack:
            if self.kind == "sqlite":
                self.directory = Path(stack.enter_context(tempfile.TemporaryDirectory()))
                template = SQLiteStore(self.directory / _TEMPLATE)
                await template.open()  # migrates it
                await template.close()  # checkpoints: the whole database is in the file
            stack.enter_context(counting(self.registries))
            first = await self._run(None)
            report = CrashReport(
                self.workflow.name,
                self.kind,
                first.outcome,
                first.writes,
                _by_step(first.scene.executions),
                uncrashed_failures=first.failures,
                step_executions=list(first.scene.executions),
            )
            if first.outcome.state == "unfinished":
                return report  # nothing to compare crashed runs with
            for k in range(1, len(first.writes) + 1):
                for when in _WHENS:
                    report.points.append(await self._point(k, when, first))
            return report

    async def _point(self, k: int, when: When, first: _Ran) -> CrashPoint:
        ran = await self._run(CrashAt(k, when))
        failures = [_at(f, k, when) for f in ran.failures]
        if ran.outcome.state != "unfinished" and not ran.outcome.same_as(first.outcome):
            failures.append(
                CrashFailure(
                    k,
                    when,
                    "result",
                    f"the run ended {ran.outcome}; uncrashed it ended {first.outcome}",
                )
            )
        repeats = [e for e in ran.scene.executions if e.repeat]
        return CrashPoint(
            k,
            when,
            ran.crashed_at,
            ran.outcome,
            _by_step(ran.scene.executions),
            repeats,
            failures,
            list(ran.scene.executions),
        )

    def _open(self, clock: _Clock, name: str) -> Callable[[], Store]:
        """Handles on one fresh database: every worker gets its own (memory: the
        one store object, as processes share a database)."""
        if self.kind == "memory":
            memory = MemoryStore(clock=clock)
            return lambda: memory
        assert self.directory is not None
        path = self.directory / f"{name}.db"
        # A copy of a database migrated once: migrating each one would cost
        # more than the run itself.
        shutil.copyfile(self.directory / _TEMPLATE, path)
        return lambda: SQLiteStore(path, clock=clock, synchronous="NORMAL")

    async def _run(self, crash: CrashAt | None) -> _Ran:
        if self.reset is not None:
            self.reset()
        self._n += 1
        clock = _Clock()
        handle = self._open(clock, f"run-{self._n}")
        landed = Landed()
        scene = Scene(landed, self.invariant)
        failures: list[CrashFailure] = []
        harness = handle()
        await harness.open()
        workers: list[_Worker] = []
        try:
            await Client(harness, registry=self.registry).start(
                self.workflow, *self.args, run_id=RUN_ID, **self.kwargs
            )
            first = _Worker("first", handle(), self, landed, crash)
            workers.append(first)
            await first.start(scene)
            unfinished = await self._until_ended(harness, handle, clock, scene, landed, workers)
            if unfinished is None:
                outcome = await _outcome(harness)
            else:
                outcome = RunOutcome("unfinished")
                failures.append(unfinished)
            failures += await self._replays(harness)
        finally:
            for w in reversed(workers):
                await w.finish(self.timeout)
            if self.kind != "memory":  # the workers closed the shared memory store
                await harness.close()
        failures += scene.failures()
        writes = [w for label, w in landed.writes if label == "first"]
        crashed_at = workers[0].store.gate.crashed_at
        if crashed_at is not None and crashed_at not in writes:
            writes.append(crashed_at)  # a crash before the write: it never landed
        return _Ran(outcome, writes, crashed_at, scene, failures)

    async def _until_ended(
        self,
        store: Store,
        handle: Callable[[], Store],
        clock: _Clock,
        scene: Scene,
        landed: Landed,
        workers: list[_Worker],
    ) -> CrashFailure | None:
        """Wait until every run has ended, starting the second worker once the
        first has crashed and moving the clock on; the failure if they do not."""
        deadline = time.monotonic() + self.timeout
        stuck_since: float | None = None
        while True:
            if workers[0].dead and len(workers) == 1:
                second = _Worker("second", handle(), self, landed, None)
                workers.append(second)
                await second.start(scene)
            live = {w.worker.owner for w in workers if not w.dead}
            left, stuck = await _step_time(store, clock, live, bool(self.queues))
            if not left:
                return None
            now = time.monotonic()
            stuck_since = (stuck_since or now) if stuck else None
            states = ", ".join(f"{r.run_id} {r.state}" for r in left)
            if stuck_since is not None and now - stuck_since > _STUCK:
                return CrashFailure(
                    None,
                    None,
                    "unfinished",
                    f"the run waits for what no one will send, a signal? ({states})",
                )
            if now > deadline:
                return CrashFailure(
                    None,
                    None,
                    "unfinished",
                    f"the run did not end within {self.timeout:g}s ({states})",
                )
            await asyncio.sleep(_POLL / 2)

    async def _replays(self, store: Store) -> list[CrashFailure]:
        """Every run's final journal must replay against the code."""
        failures: list[CrashFailure] = []
        page = await store.reads.list_runs(limit=1000)
        for run in page.runs:
            journal = journal_of(await store.reads.history(run.run_id))
            verdict = check_journal(journal, self.registry, run_id=run.run_id)
            if verdict.status in ("diverged", "skipped"):
                failures.append(
                    CrashFailure(
                        None, None, "replay", f"the journal of run {run.run_id}: {verdict.message}"
                    )
                )
        return failures


def _at(failure: CrashFailure, k: int, when: When) -> CrashFailure:
    return CrashFailure(
        k, when, failure.check, failure.message, failure.step, failure.attempt, failure.execution
    )


def _by_step(executions: list[StepExecution]) -> dict[str, int]:
    return dict(Counter(e.step for e in executions))


async def _step_time(
    store: Store, clock: _Clock, live: set[str], tasks: bool
) -> tuple[list[RunRecord], bool]:
    """The runs not yet ended, and whether they are stuck.

    If none of them can proceed now (none held by a live worker, none due)
    the store clock moves to the first time one can: a durable timer, a
    retry, the lease of a crashed worker running out. With ``tasks``,
    dispatched steps' tasks count too (their leases and retries). Stuck: no
    run is held, due or due later, so only something from outside (a signal)
    could move them.
    """
    runs = (await store.reads.list_runs(state=_OPEN, limit=1000)).runs
    if not runs:
        return runs, False
    now = clock()
    due: list[float] = []
    for run in runs:
        if run.state is RunState.RUNNING:
            expires = run.lease_expires_at or now
            if run.lease_owner in live and expires > now:
                return runs, False  # a live worker is at it
            due.append(expires)
        elif run.wake_at is not None:
            due.append(run.wake_at)
    if tasks:
        for task in await _open_tasks(store, runs):
            if task.state == "leased":
                expires = task.lease_expires_at or now
                if task.lease_owner in live and expires > now:
                    return runs, False
                due.append(expires)
            else:
                due.append(task.available_at)
    if due and min(due) > now:
        clock.advance_to(min(due) + 0.001)
    return runs, not due


async def _open_tasks(store: Store, runs: list[RunRecord]) -> list[TaskRecord]:
    """The available and leased tasks of the dispatched steps of ``runs``."""
    found: list[TaskRecord] = []
    for run in runs:
        for event in await store.reads.history(run.run_id):
            if event.type != EventType.STEP_DISPATCHED or event.command is None:
                continue
            task = await store.tasks.get(run.run_id, event.command)
            if task is not None and task.state in ("available", "leased"):
                found.append(task)
    return found


async def _outcome(store: Store) -> RunOutcome:
    """How the run's continue-as-new chain ended."""
    run = await store.reads.get_run(RUN_ID)
    while run is not None and run.continued_to is not None:
        run = await store.reads.get_run(run.continued_to)
    if run is None:
        return RunOutcome("unfinished")
    if run.state is RunState.COMPLETED:
        result = msgspec.json.decode(run.result) if run.result is not None else None
        return RunOutcome("completed", result)
    if run.error is not None:
        error = msgspec.json.decode(run.error)
        return RunOutcome(str(run.state), None, error.get("type"), error.get("message"))
    return RunOutcome(str(run.state))
