"""The Store protocol: the narrow interface every storage backend implements.

Payloads cross this boundary as encoded JSON ``bytes``; the store never decodes
them. Times are seconds since the epoch on the *store's* clock (``await
store.now()``), so every time comparison that matters for leases and wake-ups
is made by the database, not by a worker's clock.

Fencing: every write made on behalf of a worker carries its :class:`Lease`.
The write succeeds only if the run's current ``lease_token`` and
``lease_owner`` equal the lease's, the run is ``running`` and the lease has not
expired; otherwise it raises :class:`keel.errors.LeaseLostError` and changes
nothing. Every successful claim of a run gives a strictly larger token than any
earlier claim of that run.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from keel.core.states import RunState


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append; the store assigns ``seq`` and ``created_at``."""

    type: str
    command: str | None
    data: bytes  # encoded JSON object


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One journal entry as stored."""

    run_id: str
    seq: int
    type: str
    command: str | None
    data: bytes
    created_at: float


@dataclass(frozen=True, slots=True)
class NewRun:
    """What a client supplies to create a run."""

    run_id: str
    workflow: str
    version: str
    input: bytes  # encoded JSON
    started: NewEvent  # journaled at seq 0 in the same transaction as the run row
    parent_run_id: str | None = None  # a child run: the run that started it
    parent_close: str | None = None  # a child run: "cancel" | "abandon" | "wait"
    depth: int = 0  # 0 for a run started by a client, parent's + 1 for a child
    chain_id: str | None = None  # a continue-as-new successor: the chain's first run id
    generation: int = 0  # 0 for a first run, predecessor's + 1 for a successor


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A run row as stored."""

    run_id: str
    workflow: str
    version: str
    state: RunState
    input: bytes
    result: bytes | None
    error: bytes | None
    created_at: float
    updated_at: float
    wake_at: float | None
    lease_owner: str | None
    lease_token: int
    lease_expires_at: float | None
    cancel_requested: bool
    next_seq: int  # seq the next appended event will get
    parent_run_id: str | None = None
    parent_close: str | None = None
    depth: int = 0
    chain_id: str | None = None  # as stored: None for the first run of a chain
    generation: int = 0  # how many continue-as-new switches led to this run
    continued_to: str | None = None  # state ``continued``: the successor's run id

    @property
    def chain(self) -> str:
        """The correlation id every run of a continue-as-new chain shares: the first run's id."""
        return self.chain_id or self.run_id


@dataclass(frozen=True, slots=True)
class Lease:
    """Write authority over one run: valid while ``token`` is the run's current token."""

    run_id: str
    owner: str
    token: int
    expires_at: float


@dataclass(frozen=True, slots=True)
class Claimed:
    """A run a worker has just claimed, with the row as it was after the claim."""

    lease: Lease
    run: RunRecord


@dataclass(frozen=True, slots=True)
class RenewOutcome:
    """Result of a heartbeat over several leases."""

    expires_at: float  # new expiry of the leases still held
    lost: frozenset[str]  # run ids whose lease is no longer ours
    cancel_requested: frozenset[str]  # held runs with a pending cancel request


@dataclass(frozen=True, slots=True)
class SignalRecord:
    """A signal in a run's mailbox."""

    id: int
    run_id: str
    name: str
    payload: bytes
    created_at: float


@dataclass(frozen=True, slots=True)
class RunPage:
    """One page of :meth:`Store.list_runs`; pass ``next_cursor`` to get the next."""

    runs: list[RunRecord]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Which runs :meth:`Store.list_runs` and :meth:`Store.count_runs` select.

    Every field narrows the selection; an empty tuple or ``None`` does not.
    Several workflows or states select runs of any of them.
    """

    workflows: tuple[str, ...] = ()
    states: tuple[RunState, ...] = ()
    since: float | None = None  # created_at >= since
    until: float | None = None  # created_at < until
    parent_run_id: str | None = None

    def matches(self, run: RunRecord) -> bool:
        """Whether ``run`` is selected (the memory store's filter; SQL says the same)."""
        return (
            (not self.workflows or run.workflow in self.workflows)
            and (not self.states or run.state in self.states)
            and (self.since is None or run.created_at >= self.since)
            and (self.until is None or run.created_at < self.until)
            and (self.parent_run_id is None or run.parent_run_id == self.parent_run_id)
        )


@dataclass(frozen=True, slots=True)
class NewSnapshot:
    """A snapshot of a run's replay state to store (see ``keel.core.snapshot``)."""

    upto_seq: int  # last journal seq it covers; below the run's next_seq
    version: str  # the workflow version (code hash) that made it
    format: int  # its encoding's format number
    data: bytes  # the encoded snapshot (opaque to the store)


@dataclass(frozen=True, slots=True)
class SnapshotRecord:
    """The latest snapshot of a run, as stored."""

    run_id: str
    upto_seq: int
    version: str
    format: int
    data: bytes
    created_at: float


@dataclass(frozen=True, slots=True)
class NewTask:
    """A step dispatched to a named queue, inserted with the journal write that records it."""

    command: str  # the step command's id in the run, e.g. "step:render#0"
    step: str  # the step's registered name
    queue: str
    priority: int  # higher first
    args: bytes  # encoded arguments
    max_attempts: int


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """A dispatched step as stored."""

    task_id: int
    run_id: str
    command: str
    step: str
    queue: str
    priority: int
    args: bytes
    attempt: int  # the attempt number currently allowed to run (1-based)
    max_attempts: int
    state: str  # "available" | "leased" | "completed" | "failed"
    available_at: float
    lease_owner: str | None
    lease_expires_at: float | None
    result: bytes | None  # encoded result when completed
    error: bytes | None  # encoded error info of the last failure
    created_at: float


@dataclass(frozen=True, slots=True)
class TaskLease:
    """Write authority over one attempt of one task."""

    task_id: int
    owner: str
    attempt: int
    expires_at: float


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """A task queue as :meth:`Store.list_queues` reports it."""

    queue: str
    concurrency: int | None  # the cluster-wide limit on leased tasks; None: no limit
    available: int  # tasks waiting for a worker (including retries not yet due)
    leased: int  # tasks being run now


@dataclass(frozen=True, slots=True)
class NewSchedule:
    """What a client supplies to create a schedule; the times are already computed."""

    schedule_id: str
    workflow: str
    input: bytes  # encoded arguments, as NewRun.input
    cron: str | None  # a cron schedule's expression; None for a one-shot
    at: float | None  # a one-shot's time; None for a cron schedule
    timezone: str  # IANA name the cron expression (or a naive ``at``) is read in
    next_fire_at: float  # the first tick: the cron's first after now, or ``at``
    overlap: str = "allow"  # "allow", or "skip": no new run while the last one runs
    catchup_window: float | None = None  # a tick later than this (seconds) is skipped


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """A schedule as stored."""

    schedule_id: str
    workflow: str
    input: bytes
    cron: str | None
    at: float | None
    timezone: str
    next_fire_at: float | None  # None once a one-shot has fired
    paused: bool
    overlap: str
    catchup_window: float | None
    last_fire_at: float | None  # tick of the last run started
    last_run_id: str | None
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class DueSchedules:
    """What :meth:`Store.due_schedules` found: the due ones and when to look again."""

    now: float  # the store clock when it looked
    due: list[ScheduleRecord]  # next_fire_at <= now, earliest first
    next_fire_at: float | None  # earliest next_fire_at of every active schedule looked at


@dataclass(frozen=True, slots=True)
class WorkerVersion:
    """One (workflow, version) pair a worker has registered (table ``worker_versions``)."""

    workflow: str
    version: str
    worker: str  # the worker's lease owner id
    host: str
    pid: int
    first_seen: float
    last_seen: float
    live_until: float  # the pair counts as live on this worker until then


@runtime_checkable
class Store(Protocol):
    """Durable storage of runs, journals, leases, signals, dispatched steps and schedules."""

    url: str

    async def open(self) -> None:
        """Connect, check the database and apply migrations. Idempotent."""

    async def close(self) -> None:
        """Release connections and threads. Idempotent."""

    async def now(self) -> float:
        """The store's clock, in seconds since the epoch."""

    async def create_run(
        self, run: NewRun, *, lease_owner: str | None = None, lease_ttl: float = 30.0
    ) -> tuple[RunRecord, Lease | None, bool]:
        """Insert a run (``pending``, ``wake_at = now``) and its ``started`` event at seq 0.

        With ``lease_owner`` the run is inserted already ``running`` under a new
        lease held by that owner, so no other worker can claim it first.
        If ``run.run_id`` exists, nothing is written and ``(existing, None,
        False)`` is returned; otherwise ``(run, lease_or_None, True)``.
        """

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
        since: float | None = None,
        until: float | None = None,
        parent_run_id: str | None = None,
    ) -> RunPage:
        """Runs newest first (``created_at`` desc, then ``run_id`` desc), keyset-paginated.

        ``workflow`` and ``state`` take one value or several (runs of any of
        them); ``since``/``until`` bound ``created_at`` (``since <= t < until``);
        ``parent_run_id`` selects the children of one run. See :class:`RunFilter`.
        """

    async def count_runs(
        self,
        *,
        workflow: str | Collection[str] | None = None,
        state: RunState | Collection[RunState] | None = None,
        since: float | None = None,
        until: float | None = None,
        parent_run_id: str | None = None,
    ) -> int:
        """How many runs :meth:`list_runs` with the same filters would list over all pages."""

    async def load_events(self, run_id: str, *, after_seq: int = -1) -> list[EventRecord]:
        """Journal entries with ``seq > after_seq``, in ``seq`` order."""

    async def claim_runs(
        self,
        owner: str,
        *,
        limit: int,
        ttl: float,
        versions: Collection[tuple[str, str]] | None = None,
    ) -> list[Claimed]:
        """Lease up to ``limit`` runnable runs to ``owner`` for ``ttl`` seconds.

        Runnable: ``pending``/``suspended`` with ``wake_at <= now``, or
        ``running`` with an expired lease. Claimed runs become ``running`` with
        ``lease_token`` incremented. Runs are taken in ``wake_at`` order.
        With ``versions``, only runs whose ``(workflow, version)`` pair is in it
        are taken (a worker passes the pairs it has registered); ``None``: any.
        """

    async def renew_leases(self, owner: str, leases: Sequence[Lease], ttl: float) -> RenewOutcome:
        """Extend every lease still held by ``owner`` to ``now + ttl``."""

    async def append_events(
        self,
        lease: Lease,
        first_seq: int,
        events: Sequence[NewEvent],
        *,
        consume_signal: int | None = None,
    ) -> None:
        """Fenced append: the events get seqs ``first_seq, first_seq+1, ...``.

        ``first_seq`` must equal the run's ``next_seq`` (else ``StoreError``).
        ``consume_signal`` marks that mailbox row consumed in the same
        transaction (it must belong to the run and be unconsumed).
        """

    async def suspend_run(
        self,
        lease: Lease,
        first_seq: int,
        events: Sequence[NewEvent],
        *,
        wake_at: float | None,
        wake_on_signals: Collection[str] = (),
        wake_on_tasks: Collection[str] = (),
        cancel_delivered: bool = False,
        wake_on_children: Collection[str] = (),
    ) -> None:
        """Fenced: append ``events``, set ``suspended`` and ``wake_at``, drop the lease.

        If an unconsumed signal with a name in ``wake_on_signals`` is already
        in the mailbox, a task of one of the step commands in ``wake_on_tasks``
        is already ``completed``/``failed``, or a run in ``wake_on_children``
        has already ended (it finished while the run was held, so its
        completion found nothing to wake), ``wake_at`` becomes ``now`` (no lost
        wake-up).
        A cancel request also sets ``wake_at = now``, unless
        ``cancel_delivered`` says the holder already handed it to the workflow
        (whose cleanup may be sleeping).
        """

    async def finish_run(
        self,
        lease: Lease,
        first_seq: int,
        events: Sequence[NewEvent],
        *,
        state: RunState,
        result: bytes | None = None,
        error: bytes | None = None,
    ) -> None:
        """Fenced: append ``events`` and end the run in terminal ``state``.

        In the same transaction (commit before wake): the run's parent, if it
        has one and has not ended, gets ``wake_at = now``; the run's unfinished
        children with ``parent_close = "cancel"`` get ``cancel_requested`` and
        ``wake_at = now``, so they are cancelled the normal way (and their
        own end cascades to theirs); its open (``available``/``leased``)
        dispatched tasks are deleted, so none is claimed after the end and a
        task worker's next heartbeat finds its lease gone.
        """

    async def send_signal(
        self, run_id: str, name: str, payload: bytes, *, delivery_id: str | None = None
    ) -> int | None:
        """Buffer a signal in the run's mailbox and wake the run; return its id.

        A run that ended ``continued`` forwards it along ``continued_to`` to the
        live tip of its chain, resolved in the same transaction (a switch that
        commits first moves it, one that commits later finds it moved).

        ``delivery_id`` makes the send idempotent: if a signal with that id was
        already sent to the run's chain (consumed or not, moved or not), nothing
        is written and ``None`` is returned, even if the run has ended since.
        Otherwise raises ``RunNotFoundError``, ``RunFinishedError`` (the tip has
        ended) or ``RunCancellingError`` (the tip has a pending cancel request:
        the workflow would never receive it), writing nothing.
        """

    async def next_signal(self, run_id: str, name: str) -> SignalRecord | None:
        """Oldest unconsumed signal of ``name`` for the run (delivery order)."""

    async def request_cancel(self, run_id: str, cancelled_event: NewEvent) -> RunState:
        """Durably ask for a run to be cancelled; return its state afterwards.

        A run that journaled nothing but its start and that no live lease
        holds is cancelled at once (``cancelled_event`` appended, state
        ``cancelled``): no workflow code has had an effect to clean up. Any
        other unfinished run gets ``cancel_requested`` and ``wake_at = now``
        and keeps its state: its holder, or the next worker to claim it,
        delivers the request to the workflow, whose cleanup runs before the run
        ends. Raises ``RunNotFoundError`` / ``RunFinishedError``. A run cancelled at once
        wakes its parent and asks its children to cancel as :meth:`finish_run` does.
        A ``continued`` run forwards the request to the live tip of its chain,
        as :meth:`send_signal` does.
        """

    async def continue_run(
        self,
        lease: Lease,
        first_seq: int,
        events: Sequence[NewEvent],
        successor: NewRun,
    ) -> None:
        """Continue-as-new, fenced like :meth:`finish_run`, in ONE transaction: append
        ``events``, end the run ``continued`` with ``continued_to = successor.run_id``,
        create ``successor`` (``pending``, ``wake_at = now``, its ``started`` event at
        seq 0, its ``chain_id``/``generation``/parent fields as given, and the run's
        ``cancel_requested``), move the run's unconsumed signals to it (same ids, so
        delivery order holds), and ask the run's ``parent_close = "cancel"``
        children to cancel as :meth:`finish_run` does. The parent is not woken:
        the chain has not ended, and the successor's end wakes it.

        If ``successor.run_id`` exists already, raises
        :class:`keel.errors.RunExistsError` and writes nothing.
        """

    # --- snapshots --------------------------------------------------------------------
    async def save_snapshot(self, lease: Lease, snapshot: NewSnapshot) -> None:
        """Store ``snapshot`` as the run's latest, replacing the one before.

        Fenced like :meth:`append_events` (a stale holder raises
        :class:`keel.errors.LeaseLostError` and changes nothing), but appends
        nothing. ``snapshot.upto_seq`` must be below the run's ``next_seq``
        (else ``StoreError``). Journal events are never deleted.
        """

    async def load_snapshot(self, run_id: str) -> SnapshotRecord | None:
        """The run's latest snapshot, or ``None``."""

    # --- child runs -------------------------------------------------------------------
    async def start_children(
        self,
        lease: Lease,
        first_seq: int,
        events: Sequence[NewEvent],
        children: Sequence[NewRun],
    ) -> None:
        """Fenced like :meth:`append_events`: append ``events`` and create ``children``
        (``pending``, ``wake_at = now``, each with its ``started`` event at seq 0 and
        its ``parent_run_id``/``parent_close``/``depth``) in ONE transaction.

        If a run id of ``children`` exists already, raises
        :class:`keel.errors.RunExistsError` and writes nothing.
        """

    # --- dispatched steps -------------------------------------------------------------
    async def dispatch_tasks(
        self,
        lease: Lease,
        first_seq: int,
        events: Sequence[NewEvent],
        tasks: Sequence[NewTask],
    ) -> list[int]:
        """Fenced like :meth:`append_events`: append ``events`` and insert ``tasks``
        (state ``available``, attempt 1, ``available_at = now``) in ONE transaction;
        return the new task ids in order. A ``(run_id, command)`` pair has at most
        one task (a duplicate is a ``StoreError`` and nothing is written).
        """

    async def claim_tasks(
        self, owner: str, queues: Collection[str], *, limit: int, ttl: float
    ) -> list[tuple[TaskLease, TaskRecord]]:
        """Lease up to ``limit`` due tasks of ``queues``.

        First, ``leased`` tasks (of any queue) whose lease expired on the
        store clock, at most 500 per call and the oldest expiry first, lose it
        and consume an attempt: ``attempt + 1``; if that
        exceeds ``max_attempts`` the task becomes ``failed`` (``attempt`` stays
        at the lost one) and its run is woken (``wake_at = now`` when
        pending/suspended), else it is ``available`` again at once. Either way
        ``error`` becomes ``{"type": "keel.errors.StepTimeoutError", "message":
        "task lease expired on attempt N[ and no attempts are left]",
        "traceback": ""}`` (encoded JSON).
        Then ``available`` tasks with ``available_at <= now`` are taken in
        ``priority`` desc, ``available_at``, ``task_id`` order, each exactly once
        among concurrent claimers (SKIP LOCKED on PostgreSQL), and become
        ``leased`` to ``owner`` until ``now + ttl`` at their current attempt.
        A queue with a limit (:meth:`set_queue_limit`) never has more than that
        many tasks ``leased`` at once because of a claim, however many workers
        claim concurrently: its tasks are skipped once the limit is reached.
        """

    async def set_queue_limit(self, queue: str, concurrency: int | None) -> None:
        """Cap the tasks of ``queue`` leased at once over all workers (``None``: no cap).

        Applies to claims from now on; leases already held are not revoked.
        """

    async def list_queues(self) -> list[QueueInfo]:
        """Queues with a limit or with tasks available or leased, by name."""

    async def renew_task_leases(
        self, owner: str, leases: Sequence[TaskLease], ttl: float
    ) -> frozenset[int]:
        """Extend the task leases ``owner`` still holds; return the ids it lost."""

    async def complete_task(self, lease: TaskLease, result: bytes) -> None:
        """Store the result of a leased attempt and wake the task's run.

        Fenced: the task must be ``leased`` to ``lease.owner`` at
        ``lease.attempt`` with an unexpired lease, else ``LeaseLostError``
        (with ``task_id`` set) and nothing changes (another owner, an older
        attempt, an expired lease).
        In the same transaction: ``state = completed``, and the run gets
        ``wake_at = now`` if it is pending/suspended (commit before wake; notify).
        """

    async def fail_task(self, lease: TaskLease, error: bytes, retry_at: float | None) -> None:
        """Record a failed attempt (fenced as :meth:`complete_task`).

        With ``retry_at``: ``available`` again at ``attempt + 1`` from
        ``retry_at``. Without, or when ``attempt`` is already ``max_attempts``:
        ``failed`` for good (``attempt`` unchanged), and the run is woken.
        """

    async def get_task(self, run_id: str, command: str) -> TaskRecord | None:
        """The task of one step command of a run, if it was dispatched."""

    async def get_idempotent(self, scope: str, key: str) -> bytes | None:
        """The result stored under a user idempotency key (``scope`` is the step name)."""

    async def put_idempotent(self, scope: str, key: str, result: bytes) -> bytes:
        """Store ``result`` under the key unless one is stored; return the stored one.

        Concurrent puts converge on the first committed result.
        """

    # --- schedules ------------------------------------------------------------------
    async def create_schedule(self, schedule: NewSchedule) -> ScheduleRecord:
        """Insert an active schedule; ``ScheduleExistsError`` if the id is taken.

        Wakes ``wait_for_change``/``wait_for_work`` callers (schedule loops) on commit.
        """

    async def get_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        """The schedule, or ``None``."""

    async def list_schedules(self, *, workflow: str | None = None) -> list[ScheduleRecord]:
        """Every schedule (of ``workflow``), by ``schedule_id``."""

    async def pause_schedule(self, schedule_id: str) -> ScheduleRecord:
        """Stop firing until resumed; ``ScheduleNotFoundError`` if missing."""

    async def resume_schedule(self, schedule_id: str, next_fire_at: float | None) -> ScheduleRecord:
        """A paused schedule fires again from ``next_fire_at`` (a schedule that is not
        paused is left as it is); ``ScheduleNotFoundError`` if missing. Wakes as
        :meth:`create_schedule`."""

    async def delete_schedule(self, schedule_id: str) -> None:
        """Delete the schedule (runs it started stay); ``ScheduleNotFoundError`` if missing."""

    async def due_schedules(self, workflows: Collection[str], *, limit: int) -> DueSchedules:
        """Active (not paused) schedules of ``workflows`` with ``next_fire_at <= now``."""

    async def fire_schedule(
        self,
        schedule_id: str,
        *,
        expected: float,
        tick: float,
        next_fire_at: float | None,
        run: NewRun | None,
    ) -> bool:
        """Handle one due tick, exactly once among concurrent callers; return whether
        this call did.

        Compare-and-set in ONE transaction: only if the schedule exists, is not
        paused, its ``next_fire_at`` is still ``expected`` and ``tick <= now`` on
        the store clock, set ``next_fire_at`` and, with a ``run``, create it as
        :meth:`create_run` does (an existing run id is left alone: a tick's run id
        is derived from the tick) and record ``last_fire_at = tick`` and
        ``last_run_id``. ``run=None`` skips the tick. Otherwise nothing changes.
        """

    # --- worker versions ------------------------------------------------------------
    async def register_versions(
        self,
        worker: str,
        versions: Collection[tuple[str, str]],
        *,
        host: str,
        pid: int,
        live_for: float,
    ) -> None:
        """Upsert ``worker``'s ``(workflow, version)`` pairs in one transaction:
        ``last_seen = now``, ``live_until = now + live_for`` (``first_seen`` kept
        from the first registration). Rows of any worker last seen more than a
        day ago are deleted (a dead worker's pairs do not pile up)."""

    async def forget_versions(self, worker: str) -> None:
        """Delete ``worker``'s pairs (it stopped)."""

    async def list_versions(self, *, live: bool = True) -> list[WorkerVersion]:
        """Registered pairs by workflow, version, worker; ``live``: only those with
        ``live_until >= now``."""

    async def wait_for_change(self, timeout: float) -> None:
        """Return when the store may have new work or results, or after ``timeout``.

        Only a latency hint: callers must re-check state afterwards.
        """
