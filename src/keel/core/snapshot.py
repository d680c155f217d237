"""Journal snapshots: a compacted journal prefix that replays to the same state.

A suspended coroutine cannot be saved, so a snapshot of the replay state is the
part of the journal replay needs. For the prefix it covers (``seq <= upto_seq``)
it keeps, in their original order:

* every event that resolves a command (the workflow's await returns there),
* ``child_started`` (``start_child`` returns at it, the workflow sees it),
* events of no command (``run_started``, ``cancel_requested``),
* every event of a command still unresolved at ``upto_seq`` (the driver plans
  the live tail from them: attempts and retry time, dispatched task, timer
  fire time, signal deadline);

and drops the progress events (``step_attempt_failed``, ``step_dispatched``,
``timer_started``, ``signal_awaited``) of commands resolved inside the prefix.
Those only set fields of a pending command and resolve nothing, so replay
settles the loop after them with nothing to run: without them the workflow
sees the same values in the same order. One thing replay reads from the first
event of a command is the arguments hash it checks the code's call against; a
snapshot carries the hashes its dropped events held (``hashes``).

The encoded form is one msgpack blob behind a blake2b checksum, naming its
format and the workflow version that made it, so a torn, corrupt or foreign
snapshot is recognised and ignored (the journal is always the truth).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import msgspec
from msgspec import UNSET

from keel.core.commands import args_hash_of
from keel.core.events import RESOLVING, EventType, StepFailed, read
from keel.core.journal import JournalEntry

#: The encoding and compaction rules of this module; another number is ignored.
FORMAT = 1

_CHECKSUM = 16  # bytes of blake2b digest in front of the payload

#: Progress events that may go once their command is resolved.
DROPPABLE = frozenset(
    {
        EventType.STEP_ATTEMPT_FAILED,
        EventType.STEP_DISPATCHED,
        EventType.TIMER_STARTED,
        EventType.SIGNAL_AWAITED,
    }
)

_TYPES = {t.value: t for t in EventType}


class SnapshotInvalid(ValueError):
    """The snapshot cannot be used (corrupt, other format or version); replay in full."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A compacted journal prefix, ready to replay before the tail ``seq > upto_seq``."""

    version: str  # the workflow version (code hash) whose journal this is
    upto_seq: int  # last journal seq covered
    entries: list[JournalEntry]
    #: Arguments hashes of commands whose first event was dropped, when the
    #: first kept event would not show the same one (see Execution(recorded_hashes=)).
    hashes: dict[str, str | None] = field(default_factory=dict)
    format: int = FORMAT


class _Payload(msgspec.Struct, array_like=True, frozen=True):
    format: int
    version: str
    upto_seq: int
    hashes: dict[str, str | None]
    entries: list[tuple[int, str, str | None, bytes]]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Payload)


def compact(
    entries: Sequence[JournalEntry],
    upto_seq: int,
    version: str,
    hashes: Mapping[str, str | None] | None = None,
) -> Snapshot:
    """The snapshot of ``entries`` (a journal in seq order, possibly compacted
    already, then ``hashes`` are the ones its snapshot carried) up to ``upto_seq``."""
    prefix = [e for e in entries if e.seq <= upto_seq]
    resolved: dict[str, int] = {}  # command -> seq of its resolving event
    keep_attempts: set[str] = set()  # step_failed without its attempt count: keep the attempts
    for e in prefix:
        key = e.command
        if key is not None and e.type in RESOLVING and key not in resolved:
            resolved[key] = e.seq
            if e.type is EventType.STEP_FAILED and read(StepFailed, e.data).attempts is UNSET:
                keep_attempts.add(key)
    carried = dict(hashes or {})
    seen: set[str] = set()
    need: dict[str, str | None] = {}  # first event dropped: the hash it recorded
    kept: list[JournalEntry] = []
    for e in prefix:
        key = e.command
        if key is None:
            kept.append(e)
            continue
        first = key not in seen
        if first:
            seen.add(key)
        if (
            e.type in DROPPABLE
            and e.seq < resolved.get(key, -1)
            and not (e.type is EventType.STEP_ATTEMPT_FAILED and key in keep_attempts)
        ):
            if first and key not in carried:
                need[key] = args_hash_of(e)
            continue
        if key in need and key not in carried:
            # The first kept event of a command whose first event went.
            shown = args_hash_of(e)
            if shown != need[key]:
                carried[key] = need[key]
            need.pop(key)
        kept.append(e)
    return Snapshot(version, upto_seq, kept, carried)


def encode(snapshot: Snapshot) -> bytes:
    """The snapshot as one blob: checksum, then the msgpack payload."""
    payload = _encoder.encode(
        _Payload(
            snapshot.format,
            snapshot.version,
            snapshot.upto_seq,
            snapshot.hashes,
            [(e.seq, e.type.value, e.command, e.data) for e in snapshot.entries],
        )
    )
    return _digest(payload) + payload


def decode(data: bytes, *, version: str, upto_seq: int | None = None) -> Snapshot:
    """Check and decode a blob of :func:`encode`; :class:`SnapshotInvalid` if it
    is corrupt or torn, of another format, or made for another workflow version."""
    if len(data) <= _CHECKSUM:
        raise SnapshotInvalid(f"snapshot blob is too short ({len(data)} bytes)")
    payload = data[_CHECKSUM:]
    if _digest(payload) != data[:_CHECKSUM]:
        raise SnapshotInvalid("snapshot checksum does not match its content")
    try:
        p = _decoder.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SnapshotInvalid(f"snapshot payload does not decode: {exc}") from None
    if p.format != FORMAT:
        raise SnapshotInvalid(f"snapshot format {p.format}, this code reads format {FORMAT}")
    if p.version != version:
        raise SnapshotInvalid(f"snapshot made by workflow version {p.version!r}, not {version!r}")
    if upto_seq is not None and p.upto_seq != upto_seq:
        raise SnapshotInvalid(f"snapshot covers seq {p.upto_seq}, its record says {upto_seq}")
    try:
        entries = [JournalEntry(s, _TYPES[t], c, d) for s, t, c, d in p.entries]
    except KeyError as exc:
        raise SnapshotInvalid(f"snapshot holds an unknown event type {exc}") from None
    if entries and entries[-1].seq > p.upto_seq:
        raise SnapshotInvalid("snapshot holds events past its upto_seq")
    return Snapshot(p.version, p.upto_seq, entries, dict(p.hashes), p.format)


def _digest(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=_CHECKSUM).digest()
