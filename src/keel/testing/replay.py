"""Replay in tests: assertions over recorded journals, and the checker itself.

:func:`assert_replays` replays one journal (a list of events, an exported
file, or its JSON) through a workflow and raises ``AssertionError`` with a
readable diff when the code no longer does what the journal recorded.
:func:`golden_journals` and :func:`assert_golden` replay a folder of
committed journals, one pytest test per file; :func:`replay_golden_folder`
does the whole folder in one assertion.

The checker behind them is production code (``keel replay`` uses it) in
:mod:`keel.replay`; its names are re-exported here so ``from
keel.testing.replay import check_files`` goes on working.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import is_dataclass
from pathlib import Path
from typing import Any

from keel.core.journal import JournalEntry
from keel.errors import NondeterminismError
from keel.replay import (
    JournalVerdict,
    ReplayCheckReport,
    ReplayReport,
    check_files,
    check_journal,
    check_replay,
    check_runs,
    dump_journal,
    export_runs,
    iter_runs,
    journal_filename,
    journal_files,
    journal_from_rows,
    load_journal,
)
from keel.store.base import EventRecord
from keel.worker.replaying import journal_of
from keel.workflow.definitions import WorkflowDef
from keel.workflow.registry import Registry

__all__ = [
    "JournalVerdict",
    "ReplayCheckReport",
    "ReplayDiverged",
    "ReplayReport",
    "assert_golden",
    "assert_replays",
    "check_files",
    "check_journal",
    "check_replay",
    "check_runs",
    "dump_journal",
    "export_runs",
    "golden_journals",
    "iter_runs",
    "journal_filename",
    "journal_files",
    "load_journal",
    "replay_golden_folder",
]

#: What :func:`assert_replays` takes as a journal: its events (as replay reads
#: them, as a store or ``client.history`` returns them, or exported rows), the
#: path of a ``keel runs export`` file, or that file's JSON text.
JournalLike = Sequence[Any] | str | Path | bytes

_ROW = ("seq", "type", "command", "data")  # an exported event's fields
_CONTEXT = 3  # journal events shown on each side of a divergence


class ReplayDiverged(AssertionError):
    """A journal does not replay through the code; the message is the diff.

    ``position`` is the journal seq where code and journal part (``None``: at
    the end), ``recorded`` what the journal holds there, ``requested`` what the
    code did now.
    """

    def __init__(self, message: str, position: int | None, recorded: str, requested: str) -> None:
        super().__init__(message)
        self.position = position
        self.recorded = recorded
        self.requested = requested


def assert_replays(
    workflow: WorkflowDef[Any, Any], journal: JournalLike, *, run_id: str = "replay"
) -> ReplayReport:
    """Replay ``journal`` through ``workflow``'s code; return how it ended.

    Raises :class:`ReplayDiverged` (an ``AssertionError``) naming the event
    index, what the journal has there and what the code did now, with the
    journal around it; ``ValueError`` if ``journal`` is not a journal.
    """
    entries, source = _journal(journal)
    try:
        return check_replay(workflow, entries, run_id=run_id)
    except NondeterminismError as exc:
        raise _diverged(
            workflow.name, entries, source, exc.position, exc.recorded, exc.requested
        ) from None
    except AssertionError as exc:  # the code ends differently (keel.replay's own check)
        position = getattr(exc, "position", None)
        recorded = getattr(exc, "recorded", None)
        requested = getattr(exc, "requested", None)
        if recorded is None or requested is None:
            raise
        raise _diverged(workflow.name, entries, source, position, recorded, requested) from None


def golden_journals(*folders: str | Path) -> list[Path]:
    """The journal files (``*.json``) of ``folders``, sorted: parametrize a test
    with them, one test per file (``ids=lambda p: p.stem``)."""
    return list(journal_files(folders))


def assert_golden(journal: JournalLike, registry: Registry | None = None) -> JournalVerdict:
    """Replay one golden journal through the code ``registry`` holds for its
    workflow (its recorded version if registered, else the current one), as
    ``keel replay`` does. Raises :class:`ReplayDiverged` with the diff if it
    diverges, ``AssertionError`` if its workflow is not registered."""
    entries, source = _journal(journal)
    verdict = check_journal(entries, registry, source=source)
    _fail_on(verdict, entries)
    return verdict


def replay_golden_folder(
    folder: str | Path, registry: Registry | None = None, *, strict: bool = True
) -> ReplayCheckReport:
    """Replay every journal in ``folder`` and assert that all replay: one
    ``AssertionError`` lists every file that diverged with its diff (and with
    ``strict``, every journal of a workflow ``registry`` does not hold)."""
    report = check_files([folder], registry)
    problems: list[str] = []
    for verdict in report.results:
        try:
            _fail_on(verdict, load_journal(verdict.source), strict=strict)
        except AssertionError as exc:
            problems.append(str(exc))
    if problems:
        raise AssertionError("\n\n".join([report.summary(), *problems]))
    return report


def _fail_on(
    verdict: JournalVerdict, entries: Sequence[JournalEntry], *, strict: bool = True
) -> None:
    if verdict.status == "diverged":
        if verdict.recorded is None or verdict.requested is None:
            raise AssertionError(f"{verdict.source or verdict.run_id}: {verdict.message}")
        raise _diverged(
            verdict.workflow,
            entries,
            verdict.source,
            verdict.position,
            verdict.recorded,
            verdict.requested,
        )
    if verdict.status == "skipped" and strict:
        raise AssertionError(f"{verdict.source or verdict.run_id}: not replayed: {verdict.message}")


# --- journals in any form -----------------------------------------------------------------


def _journal(journal: JournalLike) -> tuple[list[JournalEntry], str]:
    """The journal's entries and where it came from (a path, or "")."""
    if isinstance(journal, Path):
        return load_journal(journal), str(journal)
    if isinstance(journal, str | bytes):
        text = journal.decode() if isinstance(journal, bytes) else journal
        if text.lstrip().startswith("["):
            return _checked(journal_from_rows(json.loads(text))), ""
        return load_journal(text), text
    if not isinstance(journal, Sequence) or not journal:
        raise ValueError(
            f"a journal is a list of events, an exported file or its JSON, not {journal!r}"
        )
    events: list[Any] = list(journal)
    first = events[0]
    if isinstance(first, JournalEntry):
        return _checked(events), ""
    if isinstance(first, EventRecord):
        return _checked(journal_of(events)), ""
    if isinstance(first, Mapping):
        return _checked(journal_from_rows(events)), ""
    if is_dataclass(first) and not isinstance(first, type):  # keel.HistoryEvent from a client
        rows = [{name: getattr(e, name) for name in _ROW} for e in events]
        return _checked(journal_from_rows(rows)), ""
    raise ValueError(f"not a journal event: {first!r}")


def _checked(entries: list[JournalEntry]) -> list[JournalEntry]:
    if not entries or entries[0].type.value != "run_started":
        raise ValueError("a journal starts with its run_started event")
    return entries


# --- the diff -----------------------------------------------------------------------------


def _diverged(
    workflow: str,
    entries: Sequence[JournalEntry],
    source: str,
    position: int | None,
    recorded: str,
    requested: str,
) -> ReplayDiverged:
    where = f"at event {position}" if position is not None else "at the end of the journal"
    of = f" {source}" if source else ""
    lines = [
        f"workflow {workflow!r} does not replay the journal{of} ({len(entries)} events)",
        f"{where}:",
        f"  the journal has:  {recorded}",
        f"  the code now did: {requested}",
        "the journal around it:",
    ]
    lines += _around(entries, position if position is not None else len(entries) - 1)
    return ReplayDiverged("\n".join(lines), position, recorded, requested)


def _around(entries: Sequence[JournalEntry], position: int) -> list[str]:
    low, high = max(0, position - _CONTEXT), min(len(entries), position + _CONTEXT + 1)
    lines = ["        ..."] if low > 0 else []
    for entry in entries[low:high]:
        mark = ">>" if entry.seq == position else "  "
        lines.append(
            f"  {mark} {entry.seq:>4}  {entry.type.value:<20} {entry.command or ''}".rstrip()
        )
    if high < len(entries):
        lines.append("        ...")
    return lines
