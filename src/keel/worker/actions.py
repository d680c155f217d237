"""What a run's driver may do, as data: the planners (:mod:`keel.worker.plan`)
return these, and :class:`keel.worker.effects.RunEffects` carries them out.

Three families:

* performed at once, in order: :class:`RecordEvent` (journal an event into
  the execution's outbox and feed it to the workflow) and the fenced writes
  (:class:`Commit`, :class:`ConsumeSignal`, :class:`Dispatch`,
  :class:`StartChildren`), :class:`StoreKeyed`, :class:`ReportAttempt`;
* work started in this worker once the turn settles: :class:`StartAttempt`,
  :class:`WaitUntil`;
* what ends the turn: the store's :class:`~keel.store.ports.Suspend` (built
  from the :data:`Wake` conditions the planners return),
  :class:`~keel.store.ports.Finish` and :class:`~keel.store.ports.Continue`,
  then :class:`ReportFailed`.

Actions are never changed once planned, but they are plain slotted
dataclasses, not frozen ones: several are made per step on the hot path, and
a frozen dataclass takes three times as long to build.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from keel.core.commands import Command
from keel.core.events import Event
from keel.store.base import NewRun, NewTask
from keel.store.ports import Continue as Continue
from keel.store.ports import Finish as Finish
from keel.store.ports import Suspend as Suspend

# --- journal and store writes ---------------------------------------------------------


@dataclass(slots=True)
class RecordEvent:
    """Journal ``event`` of ``command`` (``None``: of the run) into the outbox
    and feed it to the workflow; it becomes durable with the next write."""

    command: Command | None
    event: Event


@dataclass(slots=True)
class Commit:
    """Write what is journaled and not yet durable (one fenced write), if anything."""


@dataclass(slots=True)
class ConsumeSignal:
    """Write the journal now, consuming mailbox row ``signal_id`` in the same
    transaction (its ``signal_received`` is in the outbox)."""

    signal_id: int


@dataclass(slots=True)
class Dispatch:
    """Write the journal with these tasks (their ``step_dispatched`` events are
    in the outbox): one transaction inserts them all."""

    tasks: tuple[NewTask, ...]


@dataclass(slots=True)
class StartChildren:
    """Write the journal creating these child runs (their ``child_started``
    events are in the outbox): one transaction makes them all."""

    runs: tuple[NewRun, ...]
    #: The children's workflow definitions (graphs' specs are stored first).
    definitions: tuple[Any, ...] = ()


@dataclass(slots=True)
class StoreKeyed:
    """Store a dispatched step's result under its idempotency key, unless a
    result is stored there already (the first stored wins; one older than
    ``max_age`` is replaced); the next turn reads which one it is and journals
    that."""

    scope: str
    key: str
    result: bytes
    max_age: float | None = None


@dataclass(slots=True)
class ReportAttempt:
    """Log a failed step attempt (one WARNING), before its event is journaled.
    ``then % args`` says what happens next; formatted only if logged."""

    step: str
    attempt: int
    max_attempts: int
    error: BaseException
    then: str
    args: tuple[object, ...] = ()


# --- in-worker work ------------------------------------------------------------------


@dataclass(slots=True)
class StartAttempt:
    """Run attempt number ``attempt`` of an inline step or side effect here."""

    command: Command
    attempt: int


@dataclass(slots=True)
class WaitUntil:
    """Wait in this worker until ``at`` (store clock): a timer about to fire,
    or a retry about to be due, within the worker's ``inline_wait``."""

    command: Command
    what: Literal["timer", "retry"]
    at: float


# --- what wakes a suspended run --------------------------------------------------------


@dataclass(slots=True)
class WakeAt:
    """Be due again at ``at`` (a timer, a retry, a signal's deadline)."""

    at: float


@dataclass(slots=True)
class WakeOnSignal:
    """Be woken when a signal named ``name`` arrives."""

    name: str


@dataclass(slots=True)
class WakeOnTask:
    """Be woken when the task of dispatched step ``command`` (its key) ends."""

    command: str


@dataclass(slots=True)
class WakeOnChild:
    """Be woken when child run ``run_id`` ends."""

    run_id: str


Wake = WakeAt | WakeOnSignal | WakeOnTask | WakeOnChild

# --- ending the turn -----------------------------------------------------------------

# Suspend, Finish and Continue are the store's own ends of a turn
# (keel.store.ports), used as actions as they are: the executor commits what is
# journaled with one of them.


@dataclass(slots=True)
class ReportFailed:
    """Log that the run failed with ``error`` (once its :class:`Finish` is written)."""

    error: BaseException


Action = (
    RecordEvent
    | Commit
    | ConsumeSignal
    | Dispatch
    | StartChildren
    | StoreKeyed
    | ReportAttempt
    | StartAttempt
    | WaitUntil
    | Suspend
    | Finish
    | Continue
    | ReportFailed
)

#: What a planner returns: actions, and the conditions that wake the run if it suspends.
Planned = Action | Wake
