"""Journal entries as the core sees them, and the JSON envelopes of event data.

User values inside event data (step results, signal payloads, inputs) are kept
as raw JSON so they are decoded only once, to the type the code asks for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from keel.core.events import EventType


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One journal event: position, type, owning command and JSON data."""

    seq: int
    type: EventType
    command: str | None
    data: bytes


_NULL = msgspec.Raw(b"null")


class Envelope(msgspec.Struct):
    """The fields replay reads from event data, decoded in one pass (user
    values stay raw JSON, ``null`` when absent)."""

    result: msgspec.Raw = _NULL  # step_completed, child_completed
    value: msgspec.Raw = _NULL  # side_effect
    payload: msgspec.Raw = _NULL  # signal_received
    args_hash: str | None = None  # events of steps and children


_raw_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
_envelope_decoder = msgspec.json.Decoder(Envelope)
_encoder = msgspec.json.Encoder()


def envelope(**fields: Any) -> bytes:
    """Encode event data. Pass already-encoded user values as ``msgspec.Raw``."""
    return _encoder.encode(fields)


def raw(value_json: bytes) -> msgspec.Raw:
    """Wrap encoded JSON so :func:`envelope` embeds it verbatim."""
    return msgspec.Raw(value_json)


def fields(data: bytes) -> dict[str, msgspec.Raw]:
    """Split event data into its top-level fields, each still raw JSON."""
    return _raw_decoder.decode(data)


def parse(data: bytes) -> Envelope:
    """The replay-relevant fields of event data."""
    return _envelope_decoder.decode(data)


def field(data: bytes, name: str, default: Any = None) -> Any:
    """Decode one top-level field of event data to plain JSON values."""
    value = fields(data).get(name)
    return default if value is None else msgspec.json.decode(value)


def raw_field(data: bytes, name: str) -> bytes:
    """One top-level field of event data as raw JSON bytes (``null`` when absent)."""
    value = fields(data).get(name)
    return b"null" if value is None else bytes(value)


def decode_plain(data: bytes) -> dict[str, Any]:
    """Event data fully decoded to plain JSON values (for history views)."""
    result: dict[str, Any] = msgspec.json.decode(data)
    return result
