"""Replay recorded journals against current code (golden-journal tests).

Export a finished run's journal once with :func:`dump_journal`, commit the
file, and call :func:`check_replay` in a test: it fails with
:class:`keel.NondeterminismError` (naming the position, what was recorded and
what the code asked for) as soon as a code change would break runs recorded
with the old code.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec

from keel.core import codec
from keel.core import journal as jr
from keel.core.events import EventType
from keel.core.journal import JournalEntry
from keel.core.replay import Execution
from keel.definitions import WorkflowDef
from keel.errors import NondeterminismError
from keel.store.base import EventRecord


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """What replaying a journal produced."""

    status: str  # "completed" | "failed" | "cancelled" | "suspended"
    result: Any  # decoded result when completed
    events_replayed: int


class _NoLiveValues:
    """Replay of a complete journal never reaches the live tail; if it does, the
    values are fixed so the check itself stays deterministic."""

    def now(self) -> datetime:
        return datetime(2000, 1, 1, tzinfo=UTC)

    def uuid4(self) -> UUID:
        return UUID(int=0)

    def random(self) -> float:
        return 0.0


def dump_journal(events: Iterable[EventRecord], path: str | Path) -> None:
    """Write a run's journal as readable JSON (one object per event)."""
    rows = [
        {
            "seq": e.seq,
            "type": e.type,
            "command": e.command,
            "data": msgspec.json.decode(e.data),
        }
        for e in events
    ]
    Path(path).write_text(json.dumps(rows, indent=2, sort_keys=True) + "\n")


def load_journal(path: str | Path) -> list[JournalEntry]:
    """Read a journal written by :func:`dump_journal`."""
    rows = json.loads(Path(path).read_text())
    return [
        JournalEntry(
            int(row["seq"]),
            EventType(row["type"]),
            row["command"],
            msgspec.json.encode(row["data"]),
        )
        for row in rows
    ]


def check_replay(workflow: WorkflowDef[Any, Any], journal: Sequence[JournalEntry]) -> ReplayReport:
    """Replay ``journal`` through ``workflow``'s current code.

    Raises :class:`keel.NondeterminismError` on divergence, or ``AssertionError``
    if the code now ends differently from how the recorded run ended.
    """
    if not journal or journal[0].type is not EventType.RUN_STARTED:
        raise ValueError("a journal starts with its run_started event")
    data = jr.raw_field(journal[0].data, "input")
    args, kwargs = codec.decode_args(workflow.fn, data, what=f"input of {workflow.name!r}")
    ex = Execution(
        "replay", workflow.fn, args, kwargs, journal, _NoLiveValues(), workflow_name=workflow.name
    )
    ex.start()
    ended = journal[-1].type
    if ex.outcome is None:
        if ended in (EventType.RUN_COMPLETED, EventType.RUN_FAILED):
            raise NondeterminismError(
                "replay",
                journal[-1].seq,
                f"the run ending with {ended.value}",
                "more commands (the code did not finish)",
            )
        ex.evict()
        # run_cancelled without cancel_requested: cancelled before the workflow
        # saw the request (nothing had run yet, or a journal from before Keel
        # journaled the request).
        status = "cancelled" if ended is EventType.RUN_CANCELLED else "suspended"
        return ReplayReport(status, None, len(journal))
    outcome = ex.outcome
    if ended is EventType.RUN_COMPLETED:
        recorded = jr.raw_field(journal[-1].data, "result")
        if outcome.status != "completed" or msgspec.json.decode(recorded) != msgspec.json.decode(
            outcome.result or b"null"
        ):
            raise AssertionError(
                f"recorded run completed with {recorded.decode()}, replay ended "
                f"{outcome.status} with {(outcome.result or b'').decode() or outcome.error!r}"
            )
    elif ended is EventType.RUN_FAILED and outcome.status != "failed":
        raise AssertionError(f"recorded run failed, replay ended {outcome.status}")
    elif ended is EventType.RUN_CANCELLED and outcome.status != "cancelled":
        raise AssertionError(f"recorded run was cancelled, replay ended {outcome.status}")
    result = (
        codec.decode(outcome.result, workflow.result_type)
        if outcome.status == "completed" and outcome.result is not None
        else None
    )
    return ReplayReport(outcome.status, result, len(journal))
