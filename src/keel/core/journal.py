"""Journal entries as the core sees them.

An entry's data is the JSON object of its event, decoded only where it is
read, through the event's struct (:func:`keel.core.events.decode`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

import msgspec

from keel.core.events import EventType


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One journal event: position, type, owning command and JSON data."""

    seq: int
    type: EventType
    command: str | None
    data: bytes


class StoredEvent(Protocol):
    """A journal row as a store returns it (``keel.store.base.EventRecord`` is one)."""

    @property
    def seq(self) -> int: ...
    @property
    def type(self) -> str: ...
    @property
    def command(self) -> str | None: ...
    @property
    def data(self) -> bytes: ...


class TimedStoredEvent(StoredEvent, Protocol):
    """A journal row with the (store clock) time it was journaled."""

    @property
    def created_at(self) -> float: ...


def journal_text(events: Iterable[StoredEvent]) -> str:
    """A run's journal as the exported file holds it (``keel runs export``, the
    dashboard's download; ``keel replay`` reads it): one readable JSON object per event."""
    rows = [
        {"seq": e.seq, "type": e.type, "command": e.command, "data": msgspec.json.decode(e.data)}
        for e in events
    ]
    return json.dumps(rows, indent=2, sort_keys=True) + "\n"


def journal_filename(run_id: str) -> str:
    """The file name of a run's exported journal: the run id, %-quoted where needed."""
    return quote(run_id, safe="") + ".json"
