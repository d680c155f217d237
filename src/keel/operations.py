"""Operator actions: terminate, resume, retry / fork, bulk, prune.

The one implementation behind :class:`keel.Client`'s methods, the ``keel runs``
commands and the dashboard. Each action on a run is one store transaction
(``store.admin``) that fences off a worker holding the run; what is decided
before it (where a fork cuts the journal, which version it runs) is decided
here, from reads, and checked so that bad input writes nothing. A bulk
cancel, terminate or resume is one transaction per page of runs.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from keel.core import names
from keel.core.events import (
    EventType,
    RunCancelled,
    RunTerminated,
    TimerFired,
    encode_data,
    run_started,
)
from keel.core.fork import ForkPlan, plan_fork
from keel.core.journal import StoredEvent
from keel.core.states import RunState
from keel.errors import (
    ConfigurationError,
    ForkPointError,
    KeelError,
    RunNotFoundError,
    WorkflowNotFoundError,
)
from keel.store.base import BulkAct, BulkPage, NewEvent, NewFork, NewRun, RunRecord
from keel.store.facts import FactWriter
from keel.store.ports import Store
from keel.workflow.registry import Registry

#: What a bulk action may do to each selected run.
BulkAction = Literal["cancel", "terminate", "resume", "retry"]
BULK_ACTIONS: tuple[str, ...] = get_args(BulkAction)

#: States a run may be retried from: it ended without a result.
RETRYABLE = frozenset({RunState.FAILED, RunState.CANCELLED, RunState.TERMINATED})

#: How long a worker's run must have been written to no more before ``resume``
#: takes it from the worker (without ``force``): see :func:`resume`.
DEFAULT_IDLE_FOR = 60.0

#: Refusals a bulk action keeps, to report (the count of all is kept).
KEPT_REFUSALS = 100


@dataclass(frozen=True, slots=True)
class Forked:
    """A new run made by :func:`fork`: its row and where it cut the original."""

    run: RunRecord
    fork_seq: int
    redo: str | None  # the command re-run from its start, if any
    copied: int  # events copied from the original (its run_started not counted)


@dataclass(slots=True)
class BulkResult:
    """What a bulk action did: how many runs it acted on, and which it could not
    act on and why (the first :data:`KEPT_REFUSALS` of them; ``refused`` counts all)."""

    action: str
    done: int = 0
    refused: int = 0
    refusals: list[tuple[str, str]] = field(default_factory=list)
    new_runs: list[str] = field(default_factory=list)  # retry: the new run ids (first 100)

    def refuse(self, run_id: str, error: Exception) -> None:
        self.refused += 1
        if len(self.refusals) < KEPT_REFUSALS:
            self.refusals.append((run_id, str(error)))


async def terminate(store: Store, run_id: str, reason: str = "") -> RunRecord:
    """End a live run at once (see ``Client.terminate``)."""
    names.text(run_id, "run_id")
    names.text(reason, "reason")
    event = NewEvent(
        EventType.RUN_TERMINATED.value,
        None,
        encode_data(RunTerminated(reason=reason or "terminated by an operator")),
    )
    return await store.admin.terminate(run_id, event)


async def resume(
    store: Store,
    run_id: str,
    *,
    force: bool = False,
    idle_for: float = DEFAULT_IDLE_FOR,
    fire_timers: bool = False,
) -> RunRecord:
    """Make a live run runnable now (see ``Client.resume``)."""
    names.text(run_id, "run_id")
    for name, flag in (("force", force), ("fire_timers", fire_timers)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, not {flag!r}")
    # A worker whose process died has lost its liveness lock: its leases expire
    # now, so its runs count as stuck without waiting out the lease TTL.
    await store.workers.expire_dead_owners()
    idle = None if force else idle_for
    if not fire_timers:
        return await store.admin.resume(run_id, idle_for=idle)
    run = await store.reads.get_run(run_id)
    if run is None:
        raise RunNotFoundError(run_id)
    tip = await _chain_tip(store, run)
    journal = await store.reads.history(tip.run_id)
    fired = [
        NewEvent(EventType.TIMER_FIRED.value, command, encode_data(TimerFired()))
        for command in pending_timers(journal)
    ]
    return await store.admin.resume(tip.run_id, idle_for=idle, append=fired, at_seq=len(journal))


def pending_timers(journal: Sequence[StoredEvent]) -> list[str]:
    """The sleep commands of a journal that started and have not fired, in order."""
    started = [e.command for e in journal if e.type == EventType.TIMER_STARTED.value]
    fired = {e.command for e in journal if e.type == EventType.TIMER_FIRED.value}
    return [c for c in started if c is not None and c not in fired]


async def fork(
    store: Store,
    registry: Registry,
    run_id: str,
    at: str | int | None,
    *,
    new_run_id: str,
    version: str | None,
    redeliver_signals: bool,
    retry: bool,
) -> Forked:
    """Copy a run's journal up to ``at`` into a new run of the current code."""
    names.text(run_id, "run_id")
    names.name(new_run_id, "new run_id")
    names.optional_text(version, "version")
    if not isinstance(redeliver_signals, bool):
        raise TypeError(f"redeliver_signals must be a bool, not {redeliver_signals!r}")
    if isinstance(at, str):
        names.text(at, "fork point")
    planned, plan = await _plan_fork(
        store, registry, run_id, at, new_run_id, version, redeliver_signals, retry=retry
    )
    record = await store.admin.fork(
        planned.run, planned.journal, redeliver_signals=redeliver_signals
    )
    return Forked(record, plan.fork_seq, plan.redo, len(planned.journal))


async def _plan_fork(
    store: Store,
    registry: Registry,
    run_id: str,
    at: str | int | None,
    new_run_id: str,
    version: str | None,
    redeliver_signals: bool,
    *,
    retry: bool,
) -> tuple[NewFork, ForkPlan]:
    """The new run a fork of ``run_id`` at ``at`` writes, from reads: refusals
    (a ``KeelError``) are raised here, before anything is written."""
    original = await store.reads.get_run(run_id)
    if original is None:
        raise RunNotFoundError(run_id)
    if retry:
        original = await _chain_tip(store, original)
        if original.state not in RETRYABLE:
            raise ForkPointError(
                f"run {original.run_id!r} is {original.state.value}: only a failed, cancelled "
                "or terminated run is retried (fork it at a command to copy it anyway)"
            )
    journal = await store.reads.history(original.run_id)
    plan: ForkPlan = plan_fork(journal, at)
    chosen = await _version(store, registry, original.workflow, version)
    first = run_started(
        original.workflow,
        chosen,
        original.input,
        forked_from=original.run_id,
        fork_seq=plan.fork_seq,
    )
    new = NewRun(
        new_run_id,
        original.workflow,
        chosen,
        original.input,
        NewEvent(EventType.RUN_STARTED.value, None, encode_data(first)),
        forked_from=original.run_id,
        fork_seq=plan.fork_seq,
    )
    # Large step results are copied as references: the fork shares the facts.
    writer = FactWriter(store.facts)
    copied = await writer.rows([NewEvent(e.type, e.command, e.data) for e in plan.events])
    return NewFork(new, copied, redeliver_signals), plan


async def _chain_tip(store: Store, run: RunRecord) -> RunRecord:
    """The last run of ``run``'s continue-as-new chain (``run`` if it did not continue)."""
    while run.state is RunState.CONTINUED and run.continued_to is not None:
        successor = await store.reads.get_run(run.continued_to)
        if successor is None:
            break
        run = successor
    return run


async def _version(store: Store, registry: Registry, workflow: str, version: str | None) -> str:
    """The version a fork runs: ``version``; else the workflow's current version in
    this process; else the one version live workers have registered."""
    if version is not None:
        return version
    current = registry.find(workflow)
    if current is not None:
        return current.version
    live = sorted(
        {v.version for v in await store.workers.list_versions() if v.workflow == workflow}
    )
    if len(live) == 1:
        return live[0]
    raise WorkflowNotFoundError(
        f"workflow {workflow!r} is not registered in this process and live workers run "
        f"{'versions ' + ', '.join(live) if live else 'no version of it'}: "
        "say which version the new run takes (version=, or --app / --version)"
    )


def bulk_act(
    action: str, *, reason: str = "", force: bool = False, fire_timers: bool = False
) -> BulkAct:
    """What a page of bulk ``action`` (not ``retry``) does to each run, as the
    single-run action: ``reason`` for terminate, ``force`` and ``fire_timers``
    for resume."""
    names.text(reason, "reason")
    for name, flag in (("force", force), ("fire_timers", fire_timers)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, not {flag!r}")
    if action == "cancel":
        data = encode_data(RunCancelled(reason="cancelled by client"))
        return BulkAct("cancel", NewEvent(EventType.RUN_CANCELLED.value, None, data))
    if action == "terminate":
        data = encode_data(RunTerminated(reason=reason or "terminated by an operator"))
        return BulkAct("terminate", NewEvent(EventType.RUN_TERMINATED.value, None, data))
    if action == "resume":
        idle = None if force else DEFAULT_IDLE_FOR
        return BulkAct("resume", idle_for=idle, fire_timers=fire_timers)
    raise ConfigurationError(f"unknown bulk action {action!r} (one of: {BULK_ACTIONS})")


async def bulk(
    store: Store,
    action: str,
    *,
    run_ids: Iterable[str] | None,
    where: dict[str, Any],
    registry: Registry | None = None,
    new_run_id: Callable[[], str] | None = None,
    reason: str = "",
    force: bool = False,
    fire_timers: bool = False,
    on_done: Callable[[RunRecord], None] | None = None,
    page_size: int = 200,
) -> BulkResult:
    """Apply ``action`` to each of ``run_ids``, or to every run matching ``where``
    (the filters of ``reads.list_runs``), a page at a time.

    cancel, terminate and resume: each page is ONE store transaction
    (``store.admin.bulk``) that acts on every run of it as the single-run
    action does, fencing off the worker holding each, so only one page of ids
    is held at once. retry: each run's copy is planned from reads (its
    journal; the version of ``registry`` or of live workers), then the page's
    new runs (ids from ``new_run_id``) are written in ONE transaction
    (``store.admin.fork_many``). A run
    the action refuses (a typed Keel error: ended, not stuck, not failed...)
    is counted and the others go on. ``on_done`` sees each run acted on (its
    row afterwards: the live tip of its chain)."""
    if action not in BULK_ACTIONS:
        raise ConfigurationError(f"unknown bulk action {action!r} (one of: {BULK_ACTIONS})")
    if isinstance(run_ids, str):
        raise TypeError("run_ids must be a collection of run ids, not one str")
    result = BulkResult(action)
    if action == "retry":
        if registry is None or new_run_id is None:
            raise ConfigurationError("bulk retry needs the registry and a run id maker")
        return await _bulk_retry(store, registry, new_run_id, result, run_ids, where, page_size)
    act = bulk_act(action, reason=reason, force=force, fire_timers=fire_timers)
    if action == "resume":
        # As the single resume: a dead worker's runs count as stuck at once.
        await store.workers.expire_dead_owners()

    def record(page: BulkPage) -> None:
        result.done += len(page.done)
        for run_id, exc in page.refused:
            result.refuse(run_id, exc)
        if on_done is not None:
            for run in page.done:
                on_done(run)

    if run_ids is not None:
        ids = iter(run_ids)
        while chunk := [names.text(i, "run_id") for i in itertools.islice(ids, page_size)]:
            record(await store.admin.bulk(act, run_ids=chunk, limit=page_size))
        return result
    cursor: str | None = None
    while True:
        page = await store.admin.bulk(act, where=where, after=cursor, limit=page_size)  # type: ignore[arg-type]
        record(page)
        if page.next_cursor is None:
            return result
        cursor = page.next_cursor


async def _bulk_retry(
    store: Store,
    registry: Registry,
    new_run_id: Callable[[], str],
    result: BulkResult,
    run_ids: Iterable[str] | None,
    where: dict[str, Any],
    page_size: int,
) -> BulkResult:
    """Retry runs a page at a time: each run's copy is planned from reads (a
    refusal is counted), then the page's new runs are written in ONE store
    transaction (``store.admin.fork_many``)."""

    async def one_page(ids: list[str]) -> None:
        forks: list[NewFork] = []
        for run_id in ids:
            try:
                planned, _ = await _plan_fork(
                    store, registry, run_id, None, new_run_id(), None, True, retry=True
                )
            except KeelError as exc:
                result.refuse(run_id, exc)
                continue
            forks.append(planned)
        if not forks:
            return
        page = await store.admin.fork_many(forks)
        result.done += len(page.done)
        for original, error in page.refused:
            result.refuse(original, error)
        room = max(KEPT_REFUSALS - len(result.new_runs), 0)
        result.new_runs += [r.run_id for r in page.done[:room]]

    if run_ids is not None:
        ids = iter(run_ids)
        while chunk := [names.text(i, "run_id") for i in itertools.islice(ids, page_size)]:
            await one_page(chunk)
        return result
    cursor: str | None = None
    while True:
        listed = await store.reads.list_runs(limit=page_size, cursor=cursor, **where)
        await one_page([r.run_id for r in listed.runs])
        if listed.next_cursor is None:
            return result
        cursor = listed.next_cursor


async def prune(
    store: Store,
    *,
    ended_before: float,
    states: Collection[RunState] | None = None,
    batch: int = 500,
    dry_run: bool = False,
) -> int:
    """Delete every prunable run (see ``RunAdmin.prune``) in batches of ``batch``,
    each its own transaction; ``dry_run``: count them. Return how many."""
    if dry_run:
        return await store.admin.prune(
            ended_before=ended_before, states=states, limit=batch, dry_run=True
        )
    total = 0
    while True:
        n = await store.admin.prune(ended_before=ended_before, states=states, limit=batch)
        total += n
        if n < batch:
            return total
