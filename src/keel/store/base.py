"""The records that cross the store boundary (the store's protocols are in
:mod:`keel.store.ports`).

Payloads are encoded JSON ``bytes``; times are seconds since the epoch on the
store's clock.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal, TypedDict

from keel.core.states import RunState
from keel.errors import KeelError

#: ``(workflow, version)`` pairs: a claim's version filter, a worker's registration.
VersionPairs = Collection[tuple[str, str]]


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
    forked_from: str | None = None  # a retry or fork: the run whose journal it copies
    fork_seq: int | None = None  # ... up to (not including) this seq of that journal


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
    forked_from: str | None = None  # a retry or fork: the run whose journal it copies
    fork_seq: int | None = None  # ... up to (not including) this seq of that journal

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
class RunStats:
    """What metrics and health checks read of the runs table, at one moment.

    ``by_state``: how many runs are in each state (every state, 0 when none).
    ``oldest_due_at``: when the runnable run that has waited longest became
    due (a pending or suspended run's ``wake_at``, a running run's expired
    lease), ``None`` when none is due. ``now``: the store clock it was read at.
    """

    by_state: dict[RunState, int]
    oldest_due_at: float | None
    now: float

    @property
    def oldest_due_age(self) -> float:
        """Seconds the longest-waiting due run has waited (0 when none is due)."""
        return 0.0 if self.oldest_due_at is None else max(0.0, self.now - self.oldest_due_at)


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
    """One page of :meth:`~keel.store.ports.OperatorReads.list_runs`; pass
    ``next_cursor`` to get the next."""

    runs: list[RunRecord]
    next_cursor: str | None


#: The orders ``reads.list_runs`` pages runs in, each on an index (keyset pages):
#: ``created`` (creation time), ``ended`` (end time; ended runs only), ``workflow``
#: (name, then creation time) and ``state`` (name, then creation time).
RunSort = Literal["created", "ended", "workflow", "state"]
RUN_SORTS: tuple[str, ...] = ("created", "ended", "workflow", "state")


@dataclass(frozen=True, slots=True)
class BulkAct:
    """What :meth:`~keel.store.ports.RunAdmin.bulk` does to each run of a page,
    exactly as the single-run action does: ``cancel`` (``event``: the
    ``run_cancelled`` event of ``runs.request_cancel``), ``terminate``
    (``event``: ``run_terminated``) or ``resume`` (``idle_for`` as
    ``admin.resume``; ``fire_timers``: journal ``timer_fired`` for the run's
    pending sleeps in the same transaction)."""

    action: Literal["cancel", "terminate", "resume"]
    event: NewEvent | None = None
    idle_for: float | None = None
    fire_timers: bool = False


@dataclass(frozen=True, slots=True)
class NewFork:
    """One fork of :meth:`~keel.store.ports.RunAdmin.fork_many`: the arguments of
    :meth:`~keel.store.ports.RunAdmin.fork`."""

    run: NewRun
    journal: Sequence[NewEvent]
    redeliver_signals: bool = True


@dataclass(slots=True)
class BulkPage:
    """What one page of a bulk action did: ``done`` the runs acted on (each the
    run named, or the live tip of its chain, as its row afterwards),
    ``refused`` the runs the action refused with the typed error (ended, not
    stuck...); ``next_cursor`` continues a filtered selection (``None``: done)."""

    done: list[RunRecord]
    refused: list[tuple[str, KeelError]]
    next_cursor: str | None


class RunWhere(TypedDict, total=False):
    """The filter arguments of ``reads.list_runs`` and ``reads.count_runs``, for
    implementations to take as ``**where: Unpack[RunWhere]`` (checked by
    :func:`keel.store._pages.where_filter`)."""

    workflow: str | Collection[str] | None
    state: RunState | Collection[RunState] | None
    since: float | None
    until: float | None
    parent_run_id: str | None


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Which runs ``store.reads.list_runs`` and ``store.reads.count_runs`` select.

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
    """A task queue as :meth:`~keel.store.ports.TaskQueues.list_queues` reports it."""

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
    """What :meth:`~keel.store.ports.Schedules.due` found: the due ones and when to look again."""

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


class ScheduleTick(TypedDict):
    """The keyword arguments of ``schedules.fire``, for implementations to take as
    ``**tick: Unpack[ScheduleTick]``."""

    expected: float  # the schedule's next_fire_at as the caller read it
    tick: float  # the tick fired: ``expected`` or a later missed one
    next_fire_at: float | None
    run: NewRun | None


def created_record(run: NewRun, now: float, lease: Lease | None = None) -> RunRecord:
    """The row of ``run`` just created at ``now``: ``pending`` and due at once, or
    ``running`` under ``lease``."""
    return RunRecord(
        run_id=run.run_id,
        workflow=run.workflow,
        version=run.version,
        state=RunState.PENDING if lease is None else RunState.RUNNING,
        input=run.input,
        result=None,
        error=None,
        created_at=now,
        updated_at=now,
        wake_at=now if lease is None else None,
        lease_owner=None if lease is None else lease.owner,
        lease_token=0 if lease is None else lease.token,
        lease_expires_at=None if lease is None else lease.expires_at,
        cancel_requested=False,
        next_seq=1,
        parent_run_id=run.parent_run_id,
        parent_close=run.parent_close,
        depth=run.depth,
        chain_id=run.chain_id,
        generation=run.generation,
        forked_from=run.forked_from,
        fork_seq=run.fork_seq,
    )
