"""The store port, cut by capability.

A :class:`Store` is a composition of small capabilities, each a protocol in
the verbs of its domain and each with its own conformance module
(``keel.testing.conformance_*``):

=================  ==============================  =========================================
attribute          protocol                        what it holds
=================  ==============================  =========================================
``store.runs``     :class:`RunJournal`             runs, their journal, leases and fencing,
                                                   cancel requests, snapshots
``store.mailbox``  :class:`Mailbox`                signals sent to runs
``store.tasks``    :class:`TaskQueues`             dispatched steps, queues and their limits
``store.keys``     :class:`IdempotencyKeys`        step results stored under user keys
``store.facts``    :class:`Facts`                  values stored once by content digest
``store.schedules``:class:`Schedules`              cron and one-shot schedules
``store.reads``    :class:`OperatorReads`          get / list / count runs, a run's history
``store.changes``  :class:`ChangeFeed`             latency hints: something may have changed
``store.workers``  :class:`WorkerRegistry`         workers' versions and liveness locks
``store.admin``    :class:`RunAdmin`               operator actions: terminate, resume,
                                                   fork (retry), prune
``store.specs``    :class:`GraphSpecs`             graph specs by (graph, version digest)
=================  ==============================  =========================================

Payloads cross this boundary as encoded JSON ``bytes``; the store never
decodes user values. Times are seconds since the epoch on the *store's* clock
(``await store.now()``), so every time comparison that matters for leases and
wake-ups is made by the database, not by a worker's clock.

Fencing: every write made on behalf of a worker carries its
:class:`~keel.store.base.Lease`. It succeeds only if the run's current
``lease_token`` and ``lease_owner`` equal the lease's, the run is ``running``
and the lease has not expired; otherwise it raises
:class:`keel.errors.LeaseLostError` and changes nothing. Every successful claim
of a run gives a strictly larger token than any earlier claim of that run.

Run states change only along :data:`keel.core.states.TRANSITIONS`; a store
refuses any other change with :class:`keel.errors.StoreError` and writes nothing.
"""

from __future__ import annotations

import builtins
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from keel.core.states import RunState
from keel.store.base import (
    BulkAct,
    BulkPage,
    Claimed,
    DueSchedules,
    EventRecord,
    Lease,
    NewEvent,
    NewFork,
    NewRun,
    NewSchedule,
    NewSnapshot,
    NewTask,
    QueueInfo,
    RenewOutcome,
    RunPage,
    RunRecord,
    RunSort,
    RunStats,
    RunWhere,
    ScheduleRecord,
    SignalRecord,
    SnapshotRecord,
    TaskLease,
    TaskRecord,
    WorkerVersion,
)

# --- what one fenced commit records ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Suspend:
    """End the turn with the run ``suspended`` until ``wake_at`` (``None``: until woken).

    If an unconsumed signal named in ``wake_on_signals`` is already in the
    mailbox, a task of a step command in ``wake_on_tasks`` is already
    ``completed``/``failed``, or a run in ``wake_on_children`` has already ended
    (it finished while the run was held, so its end found nothing to wake),
    ``wake_at`` becomes ``now`` (no lost wake-up). A cancel request also sets
    ``wake_at = now`` unless ``cancel_delivered`` says the holder already handed
    it to the workflow (whose cleanup may be sleeping). The lease is dropped.
    """

    wake_at: float | None
    wake_on_signals: Collection[str] = ()
    wake_on_tasks: Collection[str] = ()
    wake_on_children: Collection[str] = ()
    cancel_delivered: bool = False


@dataclass(frozen=True, slots=True)
class Finish:
    """End the run in terminal ``state`` (``completed``, ``failed``, ``cancelled``).

    In the same transaction (commit before wake): the parent, if it has one and
    has not ended, gets ``wake_at = now``; unfinished children with
    ``parent_close = "cancel"`` get ``cancel_requested`` and ``wake_at = now``;
    the run's open (``available``/``leased``) dispatched tasks are deleted.
    """

    state: RunState
    result: bytes | None = None
    error: bytes | None = None


@dataclass(frozen=True, slots=True)
class Continue:
    """Continue-as-new: end the run ``continued`` with ``continued_to =
    successor.run_id`` and create ``successor`` (``pending``, ``wake_at = now``,
    its ``started`` event at seq 0, the run's ``cancel_requested``); move the
    run's unconsumed signals to it (same ids, so delivery order holds); ask the
    ``parent_close = "cancel"`` children to cancel as :class:`Finish` does. The
    parent is not woken: the chain has not ended. If ``successor.run_id`` exists,
    :class:`keel.errors.RunExistsError` and nothing is written.
    """

    successor: NewRun


@dataclass(frozen=True, slots=True)
class Turn:
    """Everything one fenced write records for a run, in ONE transaction.

    ``events`` get seqs ``first_seq, first_seq + 1, ...``; ``first_seq`` must
    equal the run's ``next_seq`` (else ``StoreError``). ``consume_signal`` marks
    that mailbox row consumed (it must belong to the run and be unconsumed).
    ``children`` are created (``pending``, ``wake_at = now``, each with its
    ``started`` event at seq 0; an existing run id is ``RunExistsError`` and
    nothing is written). ``tasks`` are inserted ``available`` at attempt 1 from
    ``now`` (a ``(run_id, command)`` pair has at most one task). ``end``, if
    given, suspends, finishes or continues the run after all that; without it
    the run stays ``running`` under the same lease.
    """

    first_seq: int
    events: Sequence[NewEvent] = ()
    consume_signal: int | None = None
    children: Sequence[NewRun] = ()
    tasks: Sequence[NewTask] = ()
    end: Suspend | Finish | Continue | None = None


@dataclass(frozen=True, slots=True)
class Committed:
    """What a :meth:`RunJournal.commit` made: the new tasks' ids, in order."""

    task_ids: list[int] = field(default_factory=list)


# --- capabilities ----------------------------------------------------------------------


class RunJournal(Protocol):
    """Runs, their journals, leases and fencing."""

    async def create(
        self, run: NewRun, *, lease_owner: str | None = None, lease_ttl: float = 30.0
    ) -> tuple[RunRecord, Lease | None, bool]:
        """Insert a run (``pending``, ``wake_at = now``) and its ``started`` event at seq 0.

        With ``lease_owner`` the run is inserted already ``running`` under a new
        lease held by that owner, so no other worker can claim it first. If
        ``run.run_id`` exists, nothing is written and ``(existing, None, False)``
        is returned; otherwise ``(run, lease_or_None, True)``.
        """

    async def claim(
        self,
        owner: str,
        *,
        limit: int,
        ttl: float,
        versions: Collection[tuple[str, str]] | None = None,
    ) -> list[Claimed]:
        """Lease up to ``limit`` runnable runs to ``owner`` for ``ttl`` seconds.

        Runnable: ``pending``/``suspended`` with ``wake_at <= now``, or
        ``running`` with an expired lease; taken in ``wake_at`` order, each
        becoming ``running`` with ``lease_token`` incremented. With ``versions``
        only runs whose ``(workflow, version)`` pair is in it are taken.
        """

    async def renew(self, owner: str, leases: Sequence[Lease], ttl: float) -> RenewOutcome:
        """Extend every lease still held by ``owner`` to ``now + ttl``."""

    async def commit(self, lease: Lease, turn: Turn) -> Committed:
        """Fenced: record ``turn`` (see :class:`Turn`) in one transaction."""

    async def request_cancel(self, run_id: str, cancelled_event: NewEvent) -> RunState:
        """Durably ask for a run to be cancelled; return its state afterwards.

        A run that journaled nothing but its start and that no live lease holds
        is cancelled at once (``cancelled_event`` appended, state ``cancelled``,
        parent woken and children asked to cancel as :class:`Finish` does). Any
        other unfinished run gets ``cancel_requested`` and ``wake_at = now`` and
        keeps its state. A ``continued`` run forwards the request to the live tip
        of its chain. Raises ``RunNotFoundError`` / ``RunFinishedError``.
        """

    async def save_snapshot(self, lease: Lease, snapshot: NewSnapshot) -> None:
        """Fenced like :meth:`commit`, appending nothing: store ``snapshot`` as the
        run's latest (``upto_seq`` below the run's ``next_seq``, else ``StoreError``)."""

    async def load_snapshot(self, run_id: str) -> SnapshotRecord | None:
        """The run's latest snapshot, or ``None``."""


class Mailbox(Protocol):
    """Signals sent to runs, buffered until the workflow takes them."""

    async def send(
        self, run_id: str, name: str, payload: bytes, *, delivery_id: str | None = None
    ) -> int | None:
        """Buffer a signal and wake the run; return its id.

        A ``continued`` run forwards it along ``continued_to`` to the live tip of
        its chain, resolved in the same transaction. ``delivery_id`` makes the
        send idempotent over the chain: a repeat writes nothing and returns
        ``None``. Otherwise ``RunNotFoundError``, ``RunFinishedError`` (the tip has
        ended) or ``RunCancellingError`` (the tip has a pending cancel request),
        writing nothing.
        """

    async def next(self, run_id: str, name: str) -> SignalRecord | None:
        """Oldest unconsumed signal of ``name`` for the run (delivery order)."""


class TaskQueues(Protocol):
    """Steps dispatched to named queues, run by task workers under task leases."""

    async def claim(
        self, owner: str, queues: Collection[str], *, limit: int, ttl: float
    ) -> list[tuple[TaskLease, TaskRecord]]:
        """Lease up to ``limit`` due tasks of ``queues`` (see the conformance suite
        for the expiry, retry and per-queue limit rules)."""

    async def renew(self, owner: str, leases: Sequence[TaskLease], ttl: float) -> frozenset[int]:
        """Extend the task leases ``owner`` still holds; return the ids it lost."""

    async def complete(self, lease: TaskLease, result: bytes) -> None:
        """Fenced by the task lease: store the result and wake the task's run."""

    async def fail(self, lease: TaskLease, error: bytes, retry_at: float | None) -> None:
        """Fenced by the task lease: retry from ``retry_at`` at ``attempt + 1``, or
        (no ``retry_at``, or no attempts left) fail for good and wake the run."""

    async def get(self, run_id: str, command: str) -> TaskRecord | None:
        """The task of one step command of a run, if it was dispatched."""

    async def set_limit(self, queue: str, concurrency: int | None) -> None:
        """Cap the tasks of ``queue`` leased at once over all workers (``None``: no cap)."""

    async def list_queues(self) -> list[QueueInfo]:
        """Queues with a limit or with tasks available or leased, by name."""


class IdempotencyKeys(Protocol):
    """Step results stored under user idempotency keys, shared by every run."""

    async def get(self, scope: str, key: str, max_age: float | None = None) -> bytes | None:
        """The result stored under ``key`` (``scope`` is the step name), or ``None``.

        ``max_age`` (seconds): an entry stored longer ago than that, by the
        store's clock, counts as missing."""

    async def put(self, scope: str, key: str, result: bytes, max_age: float | None = None) -> bytes:
        """Store ``result`` unless one is stored; return the stored one (the first
        committed result wins among concurrent puts).

        ``max_age``: an entry older than that (store clock) is replaced by
        ``result`` in the same atomic step, so concurrent puts after its expiry
        converge on one new result, as they do on a missing key."""


class Facts(Protocol):
    """Values stored once by content digest, shared by every run (see
    :mod:`keel.core.facts`): large step results, values saved by ``Client.save_fact``.

    A digest is the sha256 of the bytes, as 64 lowercase hex digits; a store
    checks it on :meth:`save` (:class:`keel.errors.FactDigestError` for bytes that
    do not hash to it, or for anything that is not a digest, writing nothing).
    Facts are never changed, and prune does not delete them.
    """

    async def save(self, digest: str, data: bytes) -> None:
        """Store ``data`` under ``digest`` unless it is stored (then nothing is written)."""

    async def load(self, digest: str) -> bytes | None:
        """The bytes stored under ``digest``, or ``None``."""

    async def load_many(self, digests: Collection[str]) -> dict[str, bytes]:
        """The stored ones of ``digests``, by digest (one read)."""


class Schedules(Protocol):
    """Cron and one-shot schedules, fired exactly once per tick among workers."""

    async def create(self, schedule: NewSchedule) -> ScheduleRecord:
        """Insert an active schedule; ``ScheduleExistsError`` if the id is taken."""

    async def get(self, schedule_id: str) -> ScheduleRecord | None:
        """The schedule, or ``None``."""

    async def list(self, *, workflow: str | None = None) -> builtins.list[ScheduleRecord]:
        """Every schedule (of ``workflow``), by ``schedule_id``."""

    async def pause(self, schedule_id: str) -> ScheduleRecord:
        """Stop firing until resumed; ``ScheduleNotFoundError`` if missing."""

    async def resume(self, schedule_id: str, next_fire_at: float | None) -> ScheduleRecord:
        """A paused schedule fires again from ``next_fire_at``; ``ScheduleNotFoundError``."""

    async def delete(self, schedule_id: str) -> None:
        """Delete the schedule (runs it started stay); ``ScheduleNotFoundError`` if missing."""

    async def due(self, workflows: Collection[str], *, limit: int) -> DueSchedules:
        """Active schedules of ``workflows`` with ``next_fire_at <= now``."""

    async def fire(
        self,
        schedule_id: str,
        *,
        expected: float,
        tick: float,
        next_fire_at: float | None,
        run: NewRun | None,
    ) -> bool:
        """Handle one due tick exactly once among concurrent callers (compare-and-set
        on ``next_fire_at == expected``); with ``run``, create it as
        :meth:`RunJournal.create` does. Return whether this call did."""


class OperatorReads(Protocol):
    """Reads for people and tools: runs, pages of runs, counts, a run's history."""

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run row, or ``None``."""

    async def get_runs(self, run_ids: Collection[str]) -> dict[str, RunRecord]:
        """The rows of those of ``run_ids`` that exist, by run id (one read)."""

    async def list_runs(
        self,
        *,
        workflow: str | Collection[str] | None = None,
        state: RunState | Collection[RunState] | None = None,
        limit: int = 50,
        cursor: str | None = None,
        oldest_first: bool = False,
        since: float | None = None,
        until: float | None = None,
        parent_run_id: str | None = None,
        sort: RunSort = "created",
    ) -> RunPage:
        """Runs newest first (``created_at`` desc, then ``run_id`` desc), or oldest
        first with ``oldest_first``, keyset-paginated (see
        :class:`~keel.store.base.RunFilter`). A cursor continues the order it came from.

        ``sort`` orders by another key, each on an index: ``ended`` (end time
        ``updated_at``, then ``run_id``; ended runs only), ``workflow`` or
        ``state`` (the name, then ``created_at``, then ``run_id``); descending,
        or ascending with ``oldest_first``. A cursor of another sort is a
        ``ConfigurationError``."""

    async def count_runs(
        self,
        *,
        workflow: str | Collection[str] | None = None,
        state: RunState | Collection[RunState] | None = None,
        since: float | None = None,
        until: float | None = None,
        parent_run_id: str | None = None,
    ) -> int:
        """How many runs :meth:`list_runs` with the same filters lists over all pages."""

    async def count_runs_by_state(
        self,
        *,
        workflow: str | Collection[str] | None = None,
        state: RunState | Collection[RunState] | None = None,
        since: float | None = None,
        until: float | None = None,
        parent_run_id: str | None = None,
    ) -> dict[RunState, int]:
        """:meth:`count_runs` per state, in one read; states with no runs are left out."""

    async def history(self, run_id: str, *, after_seq: int = -1) -> list[EventRecord]:
        """Journal entries with ``seq > after_seq``, in ``seq`` order."""

    async def first_event(self, run_id: str) -> EventRecord | None:
        """The run's ``run_started`` event (``seq`` 0), or ``None``: one row."""

    async def run_stats(self) -> RunStats:
        """Runs per state and the oldest due run, read together (for gauges and
        health checks; counting every row, it is not for a hot path)."""


class ChangeFeed(Protocol):
    """Latency hints only: callers must re-check state after any of these returns."""

    async def wait(self, timeout: float) -> None:
        """Return when anything may have changed (runs, results, signals), or after ``timeout``."""

    async def wait_for_work(self, timeout: float) -> None:
        """Like :meth:`wait`, but runs finishing do not wake it, so a claim loop
        does not pay a claim read per finished run."""

    async def wait_for_schedules(self, timeout: float) -> None:
        """Return when a schedule was created or resumed, or after ``timeout``."""


class LivenessLock(Protocol):
    """A worker's liveness lock, held from :meth:`WorkerRegistry.hold_liveness` on."""

    @property
    def held(self) -> bool:
        """Whether the lock is held now (``False`` after a lost database session
        until it is taken again: the worker should not claim meanwhile)."""

    async def release(self) -> None:
        """Give the lock up and unregister the owner. Idempotent. Closing the store
        that handed the lock out releases it too."""


class WorkerRegistry(Protocol):
    """Which workers are alive and which workflow versions they run.

    Liveness: without it a killed worker's runs wait for their leases to expire
    (the lease TTL). A store that offers liveness gives each worker a lock the
    operating system or the database drops the instant the worker's process dies
    (a flock on a per-worker file for SQLite, a session-level advisory lock for
    PostgreSQL), and lets any worker find owners whose lock is gone and expire
    their leases early. Fencing is unchanged: an expired lease is taken by the
    next claim under a larger token, and the dead holder's writes (should it not
    be dead after all) fail as they would after a normal expiry. Owners that never
    took a liveness lock are never judged dead; their leases expire after the TTL.
    """

    async def register_versions(
        self,
        worker: str,
        versions: Collection[tuple[str, str]],
        *,
        host: str,
        pid: int,
        live_for: float,
    ) -> None:
        """Upsert ``worker``'s ``(workflow, version)`` pairs (``live_until = now +
        live_for``); rows of workers last seen over a day ago are deleted."""

    async def forget_versions(self, worker: str) -> None:
        """Delete ``worker``'s pairs (it stopped)."""

    async def list_versions(self, *, live: bool = True) -> list[WorkerVersion]:
        """Registered pairs by workflow, version, worker; ``live``: only live ones."""

    async def hold_liveness(self, owner: str) -> LivenessLock | None:
        """Take ``owner``'s liveness lock for the life of this process; ``None`` if
        the backend has no liveness locks or another holder has the name (then
        the owner's leases expire only by TTL)."""

    async def expire_dead_owners(self) -> int:
        """Expire now the leases of registered owners whose liveness lock is gone,
        of runs and of dispatched steps (tasks: the next claim's sweep makes each
        available again at its next attempt, as after a TTL expiry); return how
        many. A backend without liveness locks returns 0."""


class RunAdmin(Protocol):
    """Operator actions on runs, each ONE transaction that fences off a live worker.

    A worker holding a run that :meth:`terminate` or :meth:`resume` acts on loses
    its lease in that transaction (the lease is cleared and the token bumped), so
    its next write under the old lease raises :class:`keel.errors.LeaseLostError`
    and changes nothing.
    """

    async def terminate(self, run_id: str, event: NewEvent) -> RunRecord:
        """End a live run ``terminated`` at once; return its row afterwards.

        A ``continued`` run is followed to the live tip of its chain. In one
        transaction: ``event`` (``run_terminated``) is appended at the run's next
        seq; the lease is cleared and the token bumped (a holder's next write is
        refused), ``wake_at`` cleared (its timers will never fire); the parent is
        woken; children are closed as a cancelled parent closes them ("cancel"
        and "wait" children get ``cancel_requested``; "abandon" ones run on); its
        open tasks are deleted. Unconsumed signals stay, never delivered.
        ``RunNotFoundError``, or ``RunFinishedError`` if the run has ended.
        """

    async def resume(
        self,
        run_id: str,
        *,
        idle_for: float | None,
        append: Sequence[NewEvent] = (),
        at_seq: int | None = None,
    ) -> RunRecord:
        """Make a live run runnable now; return its row afterwards.

        A ``continued`` run is followed to the live tip of its chain. The run
        becomes due at once (``wake_at = now``). A ``running`` run loses its lease
        (``suspended``, lease cleared, token bumped: the holder is fenced off)
        provided its lease has expired, or ``idle_for`` is ``None``, or nothing
        was written to the run for ``idle_for`` seconds (``updated_at``); else
        ``RunNotStuckError`` and nothing is written. A cancel request not yet
        journaled (no ``cancel_requested`` event) is withdrawn; one the workflow
        already received cannot be (``RunCancellingError``, nothing written).
        ``append`` (an operator firing the run's pending timers now) is
        journaled in the same transaction from ``at_seq``, which must be the
        run's ``next_seq`` (else ``StoreError``: the journal moved on; nothing
        written). ``RunNotFoundError``, or ``RunFinishedError`` if the run has ended.
        """

    async def bulk(
        self,
        act: BulkAct,
        *,
        run_ids: Sequence[str] | None = None,
        where: RunWhere | None = None,
        after: str | None = None,
        limit: int = 200,
    ) -> BulkPage:
        """Do ``act`` to one page of runs in ONE transaction; return what it did.

        The page is ``run_ids`` (at most ``limit``), or else the next ``limit``
        runs that ``where`` (the filters of ``reads.list_runs``) selects, newest
        first, after the cursor ``after`` (``BulkPage.next_cursor`` of the page
        before; ``None``: the first page). Each run is acted on exactly as the
        single-run action does it (``runs.request_cancel``, :meth:`terminate`,
        :meth:`resume`), fencing off a worker that holds it; a run the action
        refuses with a ``KeelError`` is listed in ``refused`` and leaves nothing
        written, and the others go on. ``ConfigurationError`` for a bad
        ``act`` or ``limit`` (1..1000), nothing written.
        """

    async def fork(
        self,
        run: NewRun,
        journal: Sequence[NewEvent],
        *,
        redeliver_signals: bool,
    ) -> RunRecord:
        """Create ``run`` as a copy of run ``run.forked_from``'s journal; return its row.

        In one transaction: the run (``pending``, due now) with ``run.started``
        at seq 0 and ``journal`` at seqs 1, 2, ...; with ``redeliver_signals``,
        every signal of the original not consumed by an event below
        ``run.fork_seq`` (unconsumed, or consumed at or after it) is copied to
        the new run, unconsumed, oldest first, with its name, payload and
        delivery id. The original is not changed. ``RunExistsError`` if
        ``run.run_id`` is taken, ``RunNotFoundError`` if the original is gone;
        nothing is written then.
        """

    async def fork_many(self, forks: Sequence[NewFork]) -> BulkPage:
        """Create each of ``forks`` as :meth:`fork` does, all in ONE transaction (a
        page of a bulk retry); return the new runs in ``done``. A fork refused
        with a ``KeelError`` (its original gone, its run id taken) is listed in
        ``refused`` under its original's run id and writes nothing; the others
        go on. ``next_cursor`` is ``None``. ``ConfigurationError`` for a bad fork
        or more than 1000 of them, nothing written."""

    async def forks(self, run_id: str) -> builtins.list[RunRecord]:
        """The runs forked (retried) from ``run_id``, oldest first."""

    async def prune(
        self,
        *,
        ended_before: float,
        states: Collection[RunState] | None = None,
        limit: int = 500,
        dry_run: bool = False,
    ) -> int:
        """Delete up to ``limit`` prunable runs, oldest end first; return how many.

        A continue-as-new chain is pruned whole. A run is prunable when every
        run of its chain (itself included) has ended, before ``ended_before``
        (a run's end time is its ``updated_at``, which nothing changes once it
        has ended); the chain ended in one of ``states`` if given (its last
        run's state: its ``continued`` runs go with it; ``states`` of only
        ``continued`` is a ``ConfigurationError``); and no run of the chain has
        a live parent or a live child. A chain's earlier runs ended first, so
        they go in the same batch as its last run or an earlier one. With the run go its journal,
        signals, tasks and snapshot. Idempotency keys are not a run's (they are
        shared by every run) and stay. ``dry_run``: count the prunable runs
        (all of them, not ``limit``) and delete nothing. One transaction per call.
        """


class GraphSpecs(Protocol):
    """Graph specs (canonical JSON bytes) by graph name and version, so any run of
    a graph can be drawn, approved and replay-checked without its code.

    A graph's version is the digest of its canonical spec, so one (graph,
    version) has one spec: saving it again is a no-op, and saving different
    bytes under a stored pair is refused. The store does not compute digests;
    readers check them (:func:`keel.graph.stored.load_spec`).
    """

    async def save(self, workflow: str, version: str, spec: bytes) -> None:
        """Store ``spec`` under ``(workflow, version)``; a no-op if those bytes are
        stored there; :class:`keel.errors.StoreError` (nothing written) if other
        bytes are."""

    async def load(self, workflow: str, version: str) -> bytes | None:
        """The spec stored under ``(workflow, version)``, or ``None``."""

    async def list(self, workflow: str | None = None) -> builtins.list[tuple[str, str]]:
        """Stored ``(workflow, version)`` pairs (of ``workflow`` only if given), sorted."""


class Store(Protocol):
    """A storage backend: lifecycle, the store clock, and its capabilities."""

    url: str
    runs: RunJournal
    mailbox: Mailbox
    tasks: TaskQueues
    keys: IdempotencyKeys
    facts: Facts
    schedules: Schedules
    reads: OperatorReads
    changes: ChangeFeed
    workers: WorkerRegistry
    admin: RunAdmin
    specs: GraphSpecs

    async def open(self) -> None:
        """Connect, check the database and apply migrations. Idempotent."""

    async def close(self) -> None:
        """Release connections and threads. Idempotent."""

    async def now(self) -> float:
        """The store's clock, in seconds since the epoch."""
