"""Journal entries as the core sees them.

An entry's data is the JSON object of its event, decoded only where it is
read, through the event's struct (:func:`keel.core.events.decode`).
"""

from __future__ import annotations

from dataclasses import dataclass

from keel.core.events import EventType


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One journal event: position, type, owning command and JSON data."""

    seq: int
    type: EventType
    command: str | None
    data: bytes
