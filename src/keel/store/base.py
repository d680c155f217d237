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


@runtime_checkable
class Store(Protocol):
    """Durable storage of runs, journals, leases and signals."""

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

    async def list_runs(
        self,
        *,
        workflow: str | None = None,
        state: RunState | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RunPage:
        """Runs newest first (``created_at`` desc, then ``run_id`` desc), keyset-paginated."""

    async def load_events(self, run_id: str, *, after_seq: int = -1) -> list[EventRecord]:
        """Journal entries with ``seq > after_seq``, in ``seq`` order."""

    async def claim_runs(self, owner: str, *, limit: int, ttl: float) -> list[Claimed]:
        """Lease up to ``limit`` runnable runs to ``owner`` for ``ttl`` seconds.

        Runnable: ``pending``/``suspended`` with ``wake_at <= now``, or
        ``running`` with an expired lease. Claimed runs become ``running`` with
        ``lease_token`` incremented. Runs are taken in ``wake_at`` order.
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
    ) -> None:
        """Fenced: append ``events``, set ``suspended`` and ``wake_at``, drop the lease.

        If an unconsumed signal with a name in ``wake_on_signals`` is already
        in the mailbox, ``wake_at`` becomes ``now`` (no lost wake-up).
        A pending cancel request also sets ``wake_at = now``.
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
        """Fenced: append ``events`` and end the run in terminal ``state``."""

    async def send_signal(self, run_id: str, name: str, payload: bytes) -> int:
        """Buffer a signal in the run's mailbox and wake the run; return its id.

        Raises ``RunNotFoundError`` / ``RunFinishedError``.
        """

    async def next_signal(self, run_id: str, name: str) -> SignalRecord | None:
        """Oldest unconsumed signal of ``name`` for the run (delivery order)."""

    async def request_cancel(self, run_id: str, cancelled_event: NewEvent) -> RunState:
        """Durably ask for a run to be cancelled; return its state afterwards.

        A run no live lease holds is cancelled at once (``cancelled_event``
        appended, state ``cancelled``); a leased run gets ``cancel_requested``
        and ``wake_at = now``, and its holder ends it. Raises
        ``RunNotFoundError`` / ``RunFinishedError``.
        """

    async def get_idempotent(self, scope: str, key: str) -> bytes | None:
        """The result stored under a user idempotency key (``scope`` is the step name)."""

    async def put_idempotent(self, scope: str, key: str, result: bytes) -> bytes:
        """Store ``result`` under the key unless one is stored; return the stored one.

        Concurrent puts converge on the first committed result.
        """

    async def wait_for_change(self, timeout: float) -> None:
        """Return when the store may have new work or results, or after ``timeout``.

        Only a latency hint: callers must re-check state afterwards.
        """
