"""Where a retry or fork cuts a run's journal, and what it copies (pure).

A fork is a new run whose journal is a copy of the original's up to a point,
after which the current code runs live. Any prefix of a journal replays (it
is what the run had journaled at some moment), with three adjustments made
here so that the copy stands on its own:

- the command the fork re-runs (``at=<command id>``, or the failed step of a
  retry) loses every event it had in the prefix, so it starts afresh: a step
  at attempt 1, a timer with a new fire time, a signal wait from scratch;
- a dispatched step still open at the cut loses its ``step_dispatched``
  event, so the fork dispatches a task of its own (the original's task
  belongs to the original);
- a child run still open at the cut belongs to the original (its end wakes
  the original, not the fork), so such a cut is refused; a retry's default
  cut moves back before the open child's start instead.

Only progress events (which never resolve an await) are dropped, so the code
sees exactly what it saw in the original up to the cut.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from keel.core.events import PROGRESS, RESOLVING, RUN_EVENTS, EventType
from keel.core.journal import StoredEvent as Entry
from keel.errors import ForkPointError


@dataclass(frozen=True, slots=True)
class ForkPlan:
    """What a fork copies: ``events`` (entries of the original below ``fork_seq``,
    in order, without its ``run_started`` and less the dropped ones); ``redo``:
    the command re-run from scratch, if any."""

    fork_seq: int
    events: list[Any]
    redo: str | None


_NONDETERMINISM = ("keel.errors.NondeterminismError", "keel.errors.PatchMismatchError")
_POSITION = re.compile(r" at journal position (\d+):")
_FAILED_COMMAND = frozenset({EventType.STEP_FAILED.value, EventType.CHILD_FAILED.value})
_CHILD_END = frozenset(
    {
        EventType.CHILD_COMPLETED.value,
        EventType.CHILD_FAILED.value,
        EventType.CHILD_CANCELLED.value,
    }
)
_RESOLVING = frozenset(t.value for t in RESOLVING)
_PROGRESS = frozenset(t.value for t in PROGRESS)
_RUN_EVENTS = frozenset(t.value for t in RUN_EVENTS)


def plan_fork(journal: Sequence[Entry], at: str | int | None = None) -> ForkPlan:
    """The copy of ``journal`` (a whole journal, from seq 0) for a fork.

    ``at``: a command id (``"step:charge#0"``): the fork re-runs that command
    and everything after it (the cut is the event that resolved it; every event
    of it before is dropped); a seq: the copy stops just below it (at least 1);
    ``None`` (a retry): see :func:`retry_point`. Raises :class:`ForkPointError`
    for a point the journal lacks, or one where a child run is open.
    """
    if not journal or journal[0].type != EventType.RUN_STARTED.value:
        raise ForkPointError("a journal starts with its run_started event")
    end = _end_seq(journal)
    if at is None:
        cut, redo = retry_point(journal)
        cut = _before_open_children(journal, cut, redo)
    elif isinstance(at, bool) or not isinstance(at, int | str):
        raise TypeError(f"a fork point is a command id or a seq, not {at!r}")
    elif isinstance(at, int):
        if not 1 <= at <= end:
            raise ForkPointError(f"fork point seq {at} is not in 1..{end} (the run's journal)")
        cut, redo = at, None
    else:
        cut, redo = _command_point(journal, at, end), at
    _check_no_open_child(journal, cut, redo)
    open_dispatch = _unresolved(journal, cut)
    events = [
        e
        for e in journal[1:cut]
        if e.command != redo
        and not (e.type == EventType.STEP_DISPATCHED.value and e.command in open_dispatch)
    ]
    return ForkPlan(cut, events, redo)


def retry_point(journal: Sequence[Entry]) -> tuple[int, str | None]:
    """Where a retry cuts by default, and the command it re-runs.

    A run failed by a nondeterminism error: at the journal position the error
    names (the first event the current code disagreed with). A run failed
    after a step or child failed for good: at that last failure, re-running
    that command from its first attempt. Otherwise (an error of the workflow
    code itself; a cancelled or terminated run): at the run's last event, or
    at the point a cancel request reached the workflow, so the current code
    carries on from where the original stopped, without its cleanup.
    """
    end = _end_seq(journal)
    last = journal[end] if end < len(journal) else None
    if last is not None and last.type == EventType.RUN_FAILED.value:
        error = msgspec.json.decode(last.data).get("error") or {}
        if isinstance(error, dict) and error.get("type") in _NONDETERMINISM:
            found = _POSITION.search(str(error.get("message", "")))
            if found and 1 <= int(found.group(1)) <= end:
                return int(found.group(1)), None
        for e in reversed(journal[1:end]):
            if e.type in _FAILED_COMMAND and e.command is not None:
                return e.seq, e.command
    for e in journal[1:end]:
        if e.type == EventType.CANCEL_REQUESTED.value:
            return e.seq, None
    return end, None


def _end_seq(journal: Sequence[Entry]) -> int:
    """The seq of the run's ending event, or the journal's length if it has none."""
    for e in journal[1:]:
        if e.type in _RUN_EVENTS:
            return e.seq
    return len(journal)


def _command_point(journal: Sequence[Entry], command: str, end: int) -> int:
    """The cut that re-runs ``command``: the event that resolved it (or the end)."""
    mine = [e for e in journal[1:end] if e.command == command]
    if not mine:
        raise ForkPointError(f"the run's journal has no command {command!r}")
    for e in mine:
        if e.type in _RESOLVING:
            return e.seq
    return end


def _open_children(journal: Sequence[Entry], cut: int, redo: str | None) -> dict[str, int]:
    """Child commands started below ``cut`` and not ended below it: command -> start seq."""
    started: dict[str, int] = {}
    for e in journal[1:cut]:
        if e.command is None or e.command == redo:
            continue
        if e.type == EventType.CHILD_STARTED.value:
            started[e.command] = e.seq
        elif e.type in _CHILD_END:
            started.pop(e.command, None)
    return started


def _before_open_children(journal: Sequence[Entry], cut: int, redo: str | None) -> int:
    while opened := _open_children(journal, cut, redo):
        cut = min(opened.values())
    return max(cut, 1)


def _check_no_open_child(journal: Sequence[Entry], cut: int, redo: str | None) -> None:
    opened = _open_children(journal, cut, redo)
    if opened:
        command, seq = min(opened.items(), key=lambda item: item[1])
        raise ForkPointError(
            f"child {command!r} is still running at that point (started at seq {seq}) and "
            f"belongs to the original run: fork at seq {seq} or earlier, or after it ended"
        )


def _unresolved(journal: Sequence[Entry], cut: int) -> set[str]:
    """Commands with progress events below ``cut`` but no resolving event there."""
    progressed: set[str] = set()
    resolved: set[str] = set()
    for e in journal[1:cut]:
        if e.command is None:
            continue
        if e.type in _RESOLVING:
            resolved.add(e.command)
        elif e.type in _PROGRESS:
            progressed.add(e.command)
    return progressed - resolved
