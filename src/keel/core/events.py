"""Journal vocabulary: event types, their data, and command identity.

Every journal entry names the command it belongs to (kind, name, ordinal among
earlier commands of that kind and name in the same execution). Replay matches
the code's commands to the journal by that identity.

Event data. Each event type has one frozen :class:`msgspec.Struct` below
(:data:`Event` is their union). A journal row keeps the type in its own column
and the data as a JSON object *without* the type, so there is no tag inside the
JSON: :func:`decode` picks the struct by the row's type, :func:`encode` gives
the row's type and data. User values (results, payloads, inputs) stay
``msgspec.Raw``: decoded once, to the type the code asks for, by the codec.

The structs reproduce the data the journal has always held, byte for byte:
fields in the order the writers always wrote them, and a field that some
writer leaves out is ``UNSET`` by default, which leaves it out of the JSON
(``None`` is written as ``null``, as it always was). Every field has a default
so that data lacking a field decodes as the string-keyed readers used to read
it (``null`` user values, ``None`` hashes, an empty error).

Data format. Every event written so far is *format 1*, and format 1 data
carries no format key. An event type whose shape changes (a field renamed,
a value changed meaning) gets the next format: its struct then declares
``format: int = 2`` and writes it, and :data:`UPCASTERS` turns data of
``(type, 1)`` into format 2, applied by :func:`decode` before the struct sees
it. A type listed in :data:`FORMATS` is decoded by peeking at its format first;
every other type is decoded straight into its struct, and refuses data that
names any format (written by newer code: misreading it would be worse). So a
new format may be written only once every worker that could replay the run
reads it: its readers ship a release ahead of its writers.

The format lives in each event's own data, not once per run in
``run_started``: workers of two Keel releases write into the same journal
during a rolling deploy, so one journal may hold events of both formats, and an
event must say which one it is. Exported journals and snapshots keep the data
bytes as stored, so they stay readable the same way. Adding an optional field
(with a default) needs no new format: older data simply lacks it, and older
readers ignore keys they do not know.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from enum import StrEnum
from typing import Any, ClassVar, NamedTuple, TypeAlias, TypeVar

import msgspec
from msgspec import UNSET as UNSET  # re-exported: "left out of the data"
from msgspec import UnsetType as UnsetType

from keel.errors import error_info


class EventType(StrEnum):
    """Kinds of journal events."""

    RUN_STARTED = "run_started"
    STEP_COMPLETED = "step_completed"
    STEP_ATTEMPT_FAILED = "step_attempt_failed"  # one attempt failed; a retry is due at retry_at
    STEP_FAILED = "step_failed"  # failed for good
    STEP_DISPATCHED = "step_dispatched"  # handed to a queue as a task; a task worker runs it
    TIMER_STARTED = "timer_started"
    TIMER_FIRED = "timer_fired"
    SIGNAL_AWAITED = "signal_awaited"
    SIGNAL_RECEIVED = "signal_received"
    SIGNAL_TIMED_OUT = "signal_timed_out"
    SIDE_EFFECT = "side_effect"  # now(), uuid4(), random(), side_effect(fn)
    PATCHED = "patched"  # patched(name) took the new code path: the run carries the patch
    # The run's cancel request reached the workflow here: replay raises
    # WorkflowCancelled at the same point, so cleanup code replays identically.
    CANCEL_REQUESTED = "cancel_requested"
    CHILD_STARTED = "child_started"  # the child run was created in the same transaction
    CHILD_COMPLETED = "child_completed"
    CHILD_FAILED = "child_failed"  # it failed, or could not be started (id taken, too deep)
    CHILD_CANCELLED = "child_cancelled"
    RUN_COMPLETED = "run_completed"
    RUN_FAILED = "run_failed"
    RUN_CANCELLED = "run_cancelled"
    RUN_CONTINUED = "run_continued"  # continue-as-new: ended; the successor has the new input
    RUN_TERMINATED = "run_terminated"  # ended at once by an operator; no workflow code ran for it


#: Events that resolve the command they belong to (the workflow's await returns).
RESOLVING = frozenset(
    {
        EventType.STEP_COMPLETED,
        EventType.STEP_FAILED,
        EventType.TIMER_FIRED,
        EventType.SIGNAL_RECEIVED,
        EventType.SIGNAL_TIMED_OUT,
        EventType.SIDE_EFFECT,
        EventType.PATCHED,
        EventType.CHILD_COMPLETED,
        EventType.CHILD_FAILED,
        EventType.CHILD_CANCELLED,
    }
)

#: Events that record progress of a pending command without resolving it.
PROGRESS = frozenset(
    {
        EventType.STEP_ATTEMPT_FAILED,
        EventType.STEP_DISPATCHED,
        EventType.TIMER_STARTED,
        EventType.SIGNAL_AWAITED,
        EventType.CHILD_STARTED,
    }
)

#: Events that describe the run itself, not a command.
RUN_EVENTS = frozenset(
    {
        EventType.RUN_STARTED,
        EventType.RUN_COMPLETED,
        EventType.RUN_FAILED,
        EventType.RUN_CANCELLED,
        EventType.RUN_CONTINUED,
        EventType.RUN_TERMINATED,
    }
)


#: Events that change the workflow's course without belonging to a command:
#: replay acts on them at their journal position.
CONTROL_EVENTS = frozenset({EventType.CANCEL_REQUESTED})


class CommandKind(StrEnum):
    """Kinds of commands a workflow issues."""

    STEP = "step"
    SLEEP = "sleep"
    SIGNAL = "signal"
    NOW = "now"
    UUID4 = "uuid4"
    RANDOM = "random"
    SIDE_EFFECT = "side_effect"
    PATCH = "patch"
    CHILD = "child"  # a child workflow run; the name is the child's workflow


# ``kind.value`` goes through the enum's descriptor; replay formats a command
# id per issued command, so the plain strings are looked up instead.
KIND_TEXT: dict[CommandKind, str] = {kind: kind.value for kind in CommandKind}

#: Commands whose value is produced on the spot (journaled, returned synchronously).
IMMEDIATE_KINDS = frozenset(
    {CommandKind.NOW, CommandKind.UUID4, CommandKind.RANDOM, CommandKind.PATCH}
)


class CommandId(NamedTuple):
    """Identity of one command: kind, name and ordinal among same kind+name.

    A named tuple, not a frozen dataclass: replay creates one per command and
    a tuple is built in a third of the time.
    """

    kind: CommandKind
    name: str
    ordinal: int

    def __str__(self) -> str:
        return f"{KIND_TEXT[self.kind]}:{self.name}#{self.ordinal}"

    def describe(self) -> str:
        """Human-readable form used in error messages."""
        return f"{KIND_TEXT[self.kind]} {self.name!r} (#{self.ordinal})"

    @classmethod
    def parse(cls, text: str) -> CommandId:
        """Inverse of ``str()``; raises ``ValueError`` on malformed input."""
        kind, sep, rest = text.partition(":")
        name, sep2, ordinal = rest.rpartition("#")
        if not sep or not sep2 or not ordinal.isascii() or not ordinal.isdigit():
            raise ValueError(f"malformed command id {text!r}")
        return cls(CommandKind(kind), name, int(ordinal))


# --- event data ------------------------------------------------------------------------

_NULL = msgspec.Raw(b"null")

#: An error as journaled: ``type``, ``message`` and usually ``traceback``
#: (see :func:`keel.errors.error_info`; stores and older code may write others).
ErrorInfo: TypeAlias = dict[str, Any]


class BaseEvent(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Base of the event structs. ``gc=False``: they hold no cycles, and replay
    makes one per event, which would otherwise drive the cyclic collector."""

    TYPE: ClassVar[EventType]
    #: The data format; ``UNSET`` (written as nothing) means format 1.
    format: int | UnsetType = UNSET


E = TypeVar("E", bound=BaseEvent)
T = TypeVar("T")


class RunStarted(BaseEvent, frozen=True, kw_only=True, gc=False):
    """A run's first event; built by :func:`run_started` only."""

    TYPE = EventType.RUN_STARTED
    workflow: str = ""
    version: str = ""
    input: msgspec.Raw = _NULL  # the encoded arguments
    # A continue-as-new successor: its chain, generation and predecessor, and
    # the chain's parent run (``null`` for a chain without one).
    chain_id: str | UnsetType = UNSET
    generation: int | UnsetType = UNSET
    continued_from: str | UnsetType = UNSET
    parent_run_id: str | UnsetType | None = UNSET  # a child run: the run that started it
    schedule: str | UnsetType = UNSET  # a tick of this schedule started the run
    scheduled_at: float | UnsetType = UNSET  # the tick
    # The W3C trace context the run's spans continue (see keel.observe.tracing).
    traceparent: str | UnsetType = UNSET
    # A retry or fork: the run whose journal it copies, and the seq of the
    # original's journal where the copy stops (events below it were copied).
    forked_from: str | UnsetType = UNSET
    fork_seq: int | UnsetType = UNSET


class StepCompleted(BaseEvent, frozen=True, kw_only=True, gc=False):
    TYPE = EventType.STEP_COMPLETED
    result: msgspec.Raw = _NULL
    args_hash: str | None = None
    attempt: int = 0  # 0: not recorded (attempts count from 1)
    task_id: int | UnsetType = UNSET  # a dispatched step: its task
    # The result stored under the step's idempotency key by an earlier completion.
    reused: bool | UnsetType = UNSET
    idempotency_key: str | UnsetType | None = UNSET
    # The attempt's start on the worker's clock and the worker (lease owner) that
    # ran it, for timelines; left out by older writers and for dispatched steps.
    started_at: float | UnsetType = UNSET
    worker: str | UnsetType = UNSET
    # The sha256 (hex) of ``result``'s bytes: the value's content address (see
    # keel.core.facts); left out by older writers.
    digest: str | UnsetType = UNSET
    # The step's first event only: its arguments (see INPUT_CAP), or their size.
    input: msgspec.Raw | UnsetType = UNSET
    input_size: int | UnsetType = UNSET


class StepAttemptFailed(BaseEvent, frozen=True, kw_only=True, gc=False):
    """One attempt failed; the next is due at ``retry_at``."""

    TYPE = EventType.STEP_ATTEMPT_FAILED
    attempt: int = 0  # 0: not recorded (the attempt after the last one known)
    error: ErrorInfo = {}
    retry_at: float | None = None
    args_hash: str | None = None
    # The attempt's start on the worker's clock and the worker (lease owner) that
    # ran it, for timelines; left out by older writers and for dispatched steps.
    started_at: float | UnsetType = UNSET
    worker: str | UnsetType = UNSET
    input: msgspec.Raw | UnsetType = UNSET  # the step's first event only
    input_size: int | UnsetType = UNSET


class StepFailed(BaseEvent, frozen=True, kw_only=True, gc=False):
    """The step failed for good."""

    TYPE = EventType.STEP_FAILED
    attempts: int | UnsetType = UNSET
    error: ErrorInfo = {}
    args_hash: str | None = None
    task_id: int | UnsetType = UNSET  # a dispatched step: its task
    # The attempt's start on the worker's clock and the worker (lease owner) that
    # ran it, for timelines; left out by older writers and for dispatched steps.
    started_at: float | UnsetType = UNSET
    worker: str | UnsetType = UNSET
    input: msgspec.Raw | UnsetType = UNSET  # the step's first event only
    input_size: int | UnsetType = UNSET


class StepDispatched(BaseEvent, frozen=True, kw_only=True, gc=False):
    """Handed to a queue as a task; a task worker runs it."""

    TYPE = EventType.STEP_DISPATCHED
    queue: str = ""
    priority: int = 0
    args_hash: str | None = None
    input: msgspec.Raw | UnsetType = UNSET  # always the step's first event
    input_size: int | UnsetType = UNSET


class TimerStarted(BaseEvent, frozen=True, kw_only=True, gc=False):
    TYPE = EventType.TIMER_STARTED
    duration: int | float | None = None  # seconds, as the workflow gave them
    fire_at: float | None = None


class TimerFired(BaseEvent, frozen=True, kw_only=True, gc=False):
    TYPE = EventType.TIMER_FIRED


class SignalAwaited(BaseEvent, frozen=True, kw_only=True, gc=False):
    TYPE = EventType.SIGNAL_AWAITED
    name: str = ""
    timeout: int | float | None = None  # as the workflow gave it
    deadline: float | None = None


class SignalReceived(BaseEvent, frozen=True, kw_only=True, gc=False):
    TYPE = EventType.SIGNAL_RECEIVED
    name: str = ""
    payload: msgspec.Raw = _NULL
    signal_id: int | None = None


class SignalTimedOut(BaseEvent, frozen=True, kw_only=True, gc=False):
    TYPE = EventType.SIGNAL_TIMED_OUT
    name: str = ""
    timeout: int | float | None = None


class SideEffect(BaseEvent, frozen=True, kw_only=True, gc=False):
    """``now()``, ``uuid4()``, ``random()`` (the value only), or ``side_effect(fn)``
    run by the worker (with its arguments hash, ``null``, and attempt)."""

    TYPE = EventType.SIDE_EFFECT
    value: msgspec.Raw = _NULL
    args_hash: str | UnsetType | None = UNSET
    attempt: int | UnsetType = UNSET


class Patched(BaseEvent, frozen=True, kw_only=True, gc=False):
    """``patched(name)`` took the new code path."""

    TYPE = EventType.PATCHED
    patch: str = ""


class CancelRequested(BaseEvent, frozen=True, kw_only=True, gc=False):
    TYPE = EventType.CANCEL_REQUESTED


class ChildStarted(BaseEvent, frozen=True, kw_only=True, gc=False):
    TYPE = EventType.CHILD_STARTED
    child_run_id: str = ""
    workflow: str = ""
    parent_close: str = ""  # "cancel" | "abandon" | "wait"
    args_hash: str | None = None


class ChildCompleted(BaseEvent, frozen=True, kw_only=True, gc=False):
    TYPE = EventType.CHILD_COMPLETED
    child_run_id: str = ""
    result: msgspec.Raw = _NULL


class ChildFailed(BaseEvent, frozen=True, kw_only=True, gc=False):
    """The child failed; or it never started (``started`` false, with the
    arguments hash of the command that asked for it)."""

    TYPE = EventType.CHILD_FAILED
    child_run_id: str = ""
    started: bool | UnsetType = UNSET
    error: ErrorInfo = {}
    args_hash: str | UnsetType | None = UNSET


class ChildCancelled(BaseEvent, frozen=True, kw_only=True, gc=False):
    TYPE = EventType.CHILD_CANCELLED
    child_run_id: str = ""


class RunCompleted(BaseEvent, frozen=True, kw_only=True, gc=False):
    TYPE = EventType.RUN_COMPLETED
    result: msgspec.Raw = _NULL


class RunFailed(BaseEvent, frozen=True, kw_only=True, gc=False):
    TYPE = EventType.RUN_FAILED
    error: ErrorInfo = {}  # also the run row's error (the same JSON)


class RunCancelled(BaseEvent, frozen=True, kw_only=True, gc=False):
    TYPE = EventType.RUN_CANCELLED
    reason: str = ""


class RunTerminated(BaseEvent, frozen=True, kw_only=True, gc=False):
    """An operator ended the run at once: no cleanup code ran, its open commands
    were dropped (see ``Client.terminate``)."""

    TYPE = EventType.RUN_TERMINATED
    reason: str = ""


class RunContinued(BaseEvent, frozen=True, kw_only=True, gc=False):
    """Continue-as-new: the run ended; ``continued_to`` goes on with ``input``."""

    TYPE = EventType.RUN_CONTINUED
    continued_to: str = ""
    version: str = ""  # the successor's workflow version
    input: msgspec.Raw = _NULL


Event: TypeAlias = (
    RunStarted
    | StepCompleted
    | StepAttemptFailed
    | StepFailed
    | StepDispatched
    | TimerStarted
    | TimerFired
    | SignalAwaited
    | SignalReceived
    | SignalTimedOut
    | SideEffect
    | Patched
    | CancelRequested
    | ChildStarted
    | ChildCompleted
    | ChildFailed
    | ChildCancelled
    | RunCompleted
    | RunFailed
    | RunCancelled
    | RunContinued
    | RunTerminated
)

#: The struct of each event type.
STRUCTS: dict[EventType, type[Event]] = {cls.TYPE: cls for cls in Event.__args__}

#: Events that carry the arguments hash of their step or child.
Hashed: TypeAlias = (
    StepCompleted | StepAttemptFailed | StepFailed | StepDispatched | ChildStarted | ChildFailed
)
HASHED: tuple[type[Hashed], ...] = Hashed.__args__


#: Encoded step arguments up to this many bytes are journaled with the step
#: (on its first event: ``step_dispatched``, or the first attempt's outcome);
#: larger ones only by their ``args_hash`` and ``input_size``. Ids, records
#: and parameters fit; a document passed as an argument would double the
#: journal row for a view. 2 KiB also keeps a typical step row under
#: PostgreSQL's TOAST threshold (about 2 KB), so it stays one inline tuple.
INPUT_CAP = 2048


def step_input(args: bytes | None) -> tuple[msgspec.Raw | UnsetType, int | UnsetType]:
    """The ``input`` and ``input_size`` fields of a step's first event: the
    encoded arguments if they fit :data:`INPUT_CAP`, else only their size."""
    if args is None:
        return UNSET, UNSET
    if len(args) <= INPUT_CAP:
        return msgspec.Raw(args), UNSET
    return UNSET, len(args)


def recorded_hash(event: Event) -> str | None:
    """The arguments hash a step's or child's event records, if any."""
    if not isinstance(event, Hashed):
        return None
    found = event.args_hash
    return None if found is UNSET else found


def run_started(
    workflow: str,
    version: str,
    input: bytes,
    *,
    parent_run_id: str | None = None,
    chain_id: str | None = None,
    generation: int | None = None,
    continued_from: str | None = None,
    schedule: str | None = None,
    scheduled_at: float | None = None,
    traceparent: str | None = None,
    forked_from: str | None = None,
    fork_seq: int | None = None,
) -> RunStarted:
    """The first event of a run of ``workflow`` at ``version`` with encoded ``input``.

    The one place a run's first event is made (client start, child runs,
    continue-as-new, schedules). ``parent_run_id``: a child run's parent. A
    continue-as-new successor gives ``chain_id``, ``generation`` and
    ``continued_from`` (its predecessor), and records the chain's parent even
    when there is none (``null``). A schedule's tick gives ``schedule`` and
    ``scheduled_at``. ``traceparent``: the W3C trace context its spans
    continue (only when tracing is on). A retry or fork gives ``forked_from``
    and ``fork_seq``. What is not given is left out of the data.
    """
    successor = continued_from is not None
    return RunStarted(
        workflow=workflow,
        version=version,
        input=msgspec.Raw(input),
        chain_id=_given(chain_id),
        generation=_given(generation),
        continued_from=_given(continued_from),
        parent_run_id=parent_run_id if successor else _given(parent_run_id),
        schedule=_given(schedule),
        scheduled_at=_given(scheduled_at),
        traceparent=_given(traceparent),
        forked_from=_given(forked_from),
        fork_seq=_given(fork_seq),
    )


def _given(value: T | None) -> T | UnsetType:
    """``value``, or ``UNSET`` (left out of the data) for ``None``."""
    return UNSET if value is None else value


def run_failed(exc: BaseException) -> tuple[RunFailed, bytes]:
    """The ``run_failed`` event of ``exc``, and its error as the run row keeps it
    (the same JSON as the event's ``error``)."""
    info = error_info(exc)
    return RunFailed(error=info), _encoder.encode(info)


# --- encoding, decoding and formats ---------------------------------------------------------

#: An upcaster turns the top-level fields of one format's data (user values
#: still ``msgspec.Raw``) into the next format's.
Upcaster: TypeAlias = Callable[[dict[str, Any]], dict[str, Any]]

#: The current format of each event type past format 1 (none yet).
FORMATS: dict[EventType, int] = {}

#: ``(type, n)`` -> the upcaster from format ``n`` of that type to ``n + 1``.
UPCASTERS: dict[tuple[EventType, int], Upcaster] = {}


class _Format(msgspec.Struct, gc=False):
    format: int = 1


_encoder = msgspec.json.Encoder()
# Each struct's decoder, by the struct and by its event type.
_decoders: dict[object, msgspec.json.Decoder[Any]] = {
    key: msgspec.json.Decoder(cls) for t, cls in STRUCTS.items() for key in (t, cls)
}
_format_decoder = msgspec.json.Decoder(_Format)
_fields_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])


def encode(event: Event) -> tuple[EventType, bytes]:
    """The journal row of ``event``: its type and its data."""
    return event.TYPE, _encoder.encode(event)


def encode_data(event: Event) -> bytes:
    """The data of ``event`` as the journal stores it."""
    return _encoder.encode(event)


def decode(type_: EventType, data: bytes) -> Event:
    """The event of a journal row; older formats are upcast to the current one.

    Raises ``msgspec.DecodeError`` (a ``ValueError``) if ``data`` does not
    fit the type's struct or is of a format this code does not know.
    """
    # read()'s body, inline: replay decodes the first event of every command here.
    if FORMATS and type_ in FORMATS:
        return _decode_versioned(STRUCTS[type_], data)
    event: Event = _decoders[type_].decode(data)
    if event.format is not UNSET:
        raise _newer(type_, event.format, 1)
    return event


def read(cls: type[E], data: bytes) -> E:
    """:func:`decode` typed, for a caller that knows the struct it expects."""
    if FORMATS and cls.TYPE in FORMATS:
        return _decode_versioned(cls, data)
    event: E = _decoders[cls].decode(data)
    if event.format is not UNSET:
        raise _newer(cls.TYPE, event.format, 1)
    return event


def _newer(type_: EventType, found: object, current: int) -> msgspec.ValidationError:
    return msgspec.ValidationError(
        f"{type_.value} data of format {found}: this Keel reads formats up to {current}"
    )


def _decode_versioned(cls: type[E], data: bytes) -> E:
    type_ = cls.TYPE
    current = FORMATS[type_]
    found = _format_decoder.decode(data).format
    if found > current:
        raise _newer(type_, found, current)
    if found < current:
        fields: dict[str, Any] = _fields_decoder.decode(data)
        for n in range(found, current):
            fields = UPCASTERS[type_, n](fields)
        fields["format"] = current
        data = _encoder.encode(fields)
    event: E = _decoders[cls].decode(data)
    return event


def plain(type_: str, data: bytes) -> dict[str, Any]:
    """Event data as plain JSON values, in the current format (for history views).

    Data of a type this code does not know, or that does not fit its type, is
    shown as stored: a history view must not fail on one odd event.
    """
    # ValueError: an unknown type, or data that does not fit it (a DecodeError).
    with contextlib.suppress(ValueError):
        data = _encoder.encode(decode(EventType(type_), data))
    result: dict[str, Any] = msgspec.json.decode(data)
    return result
