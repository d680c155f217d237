"""Content-addressed values ("facts"): digests, and step results kept out of the journal.

A value's digest is the sha256 (hex) of its encoded bytes. Every
``step_completed`` event records the digest of its result. A result larger
than a threshold (:data:`FACT_THRESHOLD` by default) is stored once, under its
digest, in the store's facts table, and the journal row keeps a *reference*
instead of the bytes: the same event with ``result`` set to ``null`` and
``"format": 2`` in front.

Readers never see a reference: the store's ``reads.history`` splices the
stored bytes back (:func:`splice`), giving the event exactly as it was written.
The ``format`` mark is for Keel releases that cannot resolve references: they
refuse the event ("format 2") instead of replaying a ``null`` result.

Pure functions over event data; the I/O is the store's.
"""

from __future__ import annotations

import hashlib
import re

import msgspec

from keel.core.events import EventType, StepCompleted

#: Step results whose encoded size is above this many bytes are stored as facts.
FACT_THRESHOLD = 64 * 1024

#: The format a reference row is marked with (see the module doc).
REFERENCE_FORMAT = 2

_STEP_COMPLETED = EventType.STEP_COMPLETED.value
# A reference row's data starts so: ``format`` is every event struct's first field.
_REFERENCE_PREFIX = b'{"format":%d,' % REFERENCE_FORMAT
_DIGEST = re.compile(r"[0-9a-f]{64}")
_NULL = msgspec.Raw(b"null")
_encoder = msgspec.json.Encoder()
# The struct's own decoder: it reads a reference's format without refusing it.
_decoder = msgspec.json.Decoder(StepCompleted)


def value_digest(data: bytes) -> str:
    """The digest of an encoded value: the sha256 of its bytes, in hex."""
    return hashlib.sha256(data).hexdigest()


def is_digest(text: object) -> bool:
    """Whether ``text`` has the shape of a digest (64 lowercase hex digits)."""
    return isinstance(text, str) and _DIGEST.fullmatch(text) is not None


def is_reference(type_: str, data: bytes) -> bool:
    """Whether a journal row is a reference to a stored result (cheap: a prefix test)."""
    return type_ == _STEP_COMPLETED and data.startswith(_REFERENCE_PREFIX)


def externalize(data: bytes, threshold: int) -> tuple[bytes, str, bytes] | None:
    """The reference row of ``step_completed`` data whose result is larger than
    ``threshold`` bytes, with the result's digest and bytes; ``None`` if it is
    not that large (then the row keeps the result)."""
    if len(data) <= threshold:  # the result is smaller than the whole event
        return None
    event = _decoder.decode(data)
    result = bytes(event.result)
    if len(result) <= threshold:
        return None
    digest = event.digest if isinstance(event.digest, str) else value_digest(result)
    ref = msgspec.structs.replace(event, format=REFERENCE_FORMAT, result=_NULL, digest=digest)
    return _encoder.encode(ref), digest, result


def reference_digest(data: bytes) -> str:
    """The digest a reference row names."""
    digest = _decoder.decode(data).digest
    if not isinstance(digest, str):
        raise ValueError("a step_completed reference without a digest")
    return digest


def splice(data: bytes, value: bytes) -> bytes:
    """The event a reference row stands for: ``value`` back as its result (the
    bytes the writer encoded before it stored the value)."""
    event = _decoder.decode(data)
    full = msgspec.structs.replace(event, format=msgspec.UNSET, result=msgspec.Raw(value))
    return _encoder.encode(full)
