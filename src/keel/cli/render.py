"""Rendering for the CLI: JSON output, run and schedule tables and details, the timeline."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import click
import msgspec
from rich.console import Console
from rich.table import Table
from rich.text import Text

from keel.cli.common import use_local_time
from keel.client import HistoryEvent, RunInfo
from keel.core.events import (
    UNSET,
    CancelRequested,
    ChildCancelled,
    ChildCompleted,
    ChildFailed,
    ChildStarted,
    Event,
    EventType,
    Patched,
    RunCancelled,
    RunCompleted,
    RunContinued,
    RunFailed,
    RunStarted,
    RunTerminated,
    SideEffect,
    SignalAwaited,
    SignalReceived,
    SignalTimedOut,
    StepAttemptFailed,
    StepCompleted,
    StepDispatched,
    StepFailed,
    TimerFired,
    TimerStarted,
    decode,
)
from keel.schedules import ScheduleInfo

STATE_STYLES = {
    "active": "green",
    "paused": "yellow",
    "done": "dim",
    "pending": "cyan",
    "running": "bold blue",
    "suspended": "yellow",
    "completed": "green",
    "failed": "bold red",
    "cancelled": "magenta",
    "terminated": "bold magenta",
    "continued": "cyan",
}

# kind -> (symbol, style)
_SYMBOLS: dict[str, tuple[str, str]] = {
    EventType.RUN_STARTED: ("▶", "cyan"),
    EventType.STEP_COMPLETED: ("✓", "green"),
    EventType.STEP_ATTEMPT_FAILED: ("✗", "yellow"),
    EventType.STEP_FAILED: ("✗", "bold red"),
    EventType.STEP_DISPATCHED: ("⇢", "cyan"),
    EventType.TIMER_STARTED: ("⏱", "blue"),
    EventType.TIMER_FIRED: ("⏱", "blue"),
    EventType.SIGNAL_AWAITED: ("✉", "magenta"),
    EventType.SIGNAL_RECEIVED: ("✉", "magenta"),
    EventType.SIGNAL_TIMED_OUT: ("✉", "red"),
    EventType.SIDE_EFFECT: ("●", "white"),
    EventType.PATCHED: ("⚑", "cyan"),
    EventType.CANCEL_REQUESTED: ("⊘", "magenta"),
    EventType.CHILD_STARTED: ("⑂", "cyan"),
    EventType.CHILD_COMPLETED: ("⑂", "green"),
    EventType.CHILD_FAILED: ("⑂", "bold red"),
    EventType.CHILD_CANCELLED: ("⑂", "magenta"),
    EventType.RUN_COMPLETED: ("■", "bold green"),
    EventType.RUN_FAILED: ("■", "bold red"),
    EventType.RUN_CANCELLED: ("■", "magenta"),
    EventType.RUN_CONTINUED: ("↪", "cyan"),
    EventType.RUN_TERMINATED: ("■", "bold magenta"),
}

SUMMARY_LIMIT = 72


# --- JSON -------------------------------------------------------------------------------


def to_builtins(value: Any) -> Any:
    """Plain JSON values (datetimes as ISO-8601 strings, enums as values)."""
    return msgspec.to_builtins(value)


def print_json(value: Any) -> None:
    """Write ``value`` as indented JSON to stdout, and nothing else."""
    encoded = msgspec.json.encode(to_builtins(value))
    click.echo(msgspec.json.format(encoded, indent=2).decode())


def compact(value: Any, limit: int = SUMMARY_LIMIT) -> str:
    """One-line JSON of ``value``, cut to ``limit`` characters."""
    try:
        text = msgspec.json.encode(to_builtins(value)).decode()
    except (TypeError, ValueError, msgspec.MsgspecError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- runs --------------------------------------------------------------------------------


def time_text(dt: datetime | None) -> str:
    """A time as the CLI shows it: UTC with a ``Z`` (``2026-12-03 08:41:07Z``), or
    under ``--local`` local time with its offset (``2026-12-03 09:41:07+01:00``)."""
    if dt is None:
        return "-"
    if not use_local_time():
        return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    try:
        text = dt.astimezone().isoformat(sep=" ", timespec="seconds")
    except (ValueError, OverflowError):  # year 1 or 9999 shifted out of range
        return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return text


def state_text(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, ""))


def runs_table(runs: Sequence[RunInfo]) -> Table:
    """The table of ``keel runs list``."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    for title in ("RUN ID", "WORKFLOW", "STATE", "CREATED", "UPDATED"):
        table.add_column(title, no_wrap=title != "WORKFLOW")
    for run in runs:
        table.add_row(
            run.run_id,
            run.workflow,
            state_text(run.state.value),
            time_text(run.created_at),
            time_text(run.updated_at),
        )
    return table


def error_summary(error: Any) -> str:
    """``Type: message`` of a journaled error dict (type without its module)."""
    if not isinstance(error, dict):
        return compact(error)
    kind = str(error.get("type", "error")).rsplit(".", 1)[-1]
    message = str(error.get("message", ""))
    return f"{kind}: {message}" if message else kind


def run_details(
    console: Console, info: RunInfo, *, input_: Any, result: Any, has_result: bool
) -> None:
    """The body of ``keel runs show``: fields, then input, result or error in full."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    wake = time_text(info.wake_at)
    if info.wake_at is not None and not info.state.is_terminal:
        delta = (info.wake_at - datetime.now(UTC)).total_seconds()
        wake += f"  (in {delta:.1f}s)" if delta >= 0.05 else "  (due)"
    rows: list[tuple[str, Text | str]] = [
        ("run id", info.run_id),
        ("workflow", info.workflow),
        ("version", info.version),
        ("state", state_text(info.state.value)),
        ("created", time_text(info.created_at)),
        ("updated", time_text(info.updated_at)),
        ("wake at", wake),
        ("lease owner", info.lease_owner or "-"),
        ("cancel requested", "yes" if info.cancel_requested else "no"),
    ]
    if info.parent_run_id is not None:
        rows.append(("parent", f"{info.parent_run_id}  (depth {info.depth})"))
    if info.chain_id != info.run_id or info.continued_to is not None:
        rows.append(("chain", info.chain_id))
    if info.continued_to is not None:
        rows.append(("continued to", info.continued_to))
    if info.forked_from is not None:
        rows.append(("forked from", f"{info.forked_from}  (journal below seq {info.fork_seq})"))
    if info.forks:
        rows.append(("forks", ", ".join(info.forks)))
    if info.error:
        rows.append(("error", Text(error_summary(info.error), style="red")))
    if info.waiting:
        rows.append(("waiting", Text(info.waiting, style="yellow")))
    for key, value in rows:
        grid.add_row(key, value)
    console.print(grid)
    _json_section(console, "input", input_)
    if has_result:
        _json_section(console, "result", result)
    traceback = (info.error or {}).get("traceback")
    if traceback:
        console.print(Text("\ntraceback:", style="bold"))
        console.print(Text(str(traceback).rstrip(), style="dim"))


def _json_section(console: Console, title: str, value: Any) -> None:
    console.print(Text(f"\n{title}:", style="bold"))
    console.print_json(msgspec.json.encode(to_builtins(value)).decode())


# --- schedules -----------------------------------------------------------------------------


def schedule_when(info: ScheduleInfo) -> str:
    """``0 9 * * MON-FRI (Europe/Paris)`` or ``once at <time>``."""
    if info.cron is not None:
        return f"{info.cron} ({info.timezone})"
    return f"once at {time_text(info.at)}"


def schedules_table(found: Sequence[ScheduleInfo]) -> Table:
    """The table of ``keel schedules list``."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    for title in ("SCHEDULE ID", "WORKFLOW", "STATE", "WHEN", "NEXT RUN", "LAST RUN"):
        table.add_column(title, no_wrap=title not in ("WORKFLOW", "WHEN"))
    for info in found:
        table.add_row(
            info.schedule_id,
            info.workflow,
            state_text(info.state),
            schedule_when(info),
            time_text(info.next_fire_at),
            info.last_run_id or "-",
        )
    return table


def schedule_details(console: Console, info: ScheduleInfo) -> None:
    """The body of ``keel schedules show``."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    window = "-" if info.catchup_window is None else f"{info.catchup_window:g}s"
    rows: list[tuple[str, Text | str]] = [
        ("schedule id", info.schedule_id),
        ("workflow", info.workflow),
        ("state", state_text(info.state)),
        ("when", schedule_when(info)),
        ("next run", time_text(info.next_fire_at)),
        ("last tick", time_text(info.last_fire_at)),
        ("last run", info.last_run_id or "-"),
        ("overlap", info.overlap),
        ("catch-up window", window),
        ("created", time_text(info.created_at)),
        ("updated", time_text(info.updated_at)),
    ]
    for key, value in rows:
        grid.add_row(key, value)
    console.print(grid)
    _json_section(console, "input", info.input)


# --- the timeline ------------------------------------------------------------------------


def command_label(event: HistoryEvent) -> str:
    """Short name of the command an event belongs to (``run`` for run events)."""
    if event.kind is None or event.name is None:
        return "run" if event.command is None else event.command
    label = event.name if event.kind in ("step", event.name) else f"{event.kind}:{event.name}"
    ordinal = (event.command or "").rpartition("#")[2]
    return f"{label}#{ordinal}" if ordinal not in ("", "0") else label


class Timeline:
    """Renders journal events one row each, times relative to the first event.

    Stateful so the demo can feed events as they land and still show, e.g.,
    how long a timer slept. Rows are fixed-width grids, so rows printed one at
    a time line up, and long summaries wrap under their own column.
    """

    def __init__(self, *, name_width: int = 18) -> None:
        self.name_width = name_width
        self.t0: datetime | None = None
        self._timer_started: dict[str, datetime] = {}

    def grid(self) -> Table:
        """An empty grid with the timeline's columns."""
        grid = Table.grid(padding=(0, 2, 0, 0))
        grid.add_column(justify="right", width=10, no_wrap=True, style="dim")
        grid.add_column(width=1, no_wrap=True)
        grid.add_column(width=self.name_width, no_wrap=True, overflow="ellipsis", style="bold")
        grid.add_column()
        return grid

    def add(self, grid: Table, event: HistoryEvent) -> None:
        """Append the row of ``event`` to ``grid``."""
        if self.t0 is None:
            self.t0 = event.created_at
        rel = (event.created_at - self.t0).total_seconds()
        symbol, style = _SYMBOLS.get(event.type, ("·", "dim"))
        grid.add_row(
            f"+{rel:.3f}s", Text(symbol, style=style), command_label(event), self.summary(event)
        )

    def row(self, event: HistoryEvent) -> Table:
        """A one-row grid for ``event`` (for printing events as they land)."""
        grid = self.grid()
        self.add(grid, event)
        return grid

    def note(self, text: str, *, symbol: str = "·", style: str = "dim") -> Table:
        """A one-row grid with a remark in the summary column (the demo's narration)."""
        grid = self.grid()
        grid.add_row("", Text(symbol, style=style), "", Text(text, style=style))
        return grid

    def relative(self, when: datetime) -> str:
        """``when`` as ``+1.234s`` from the first event."""
        t0 = self.t0 or when
        return f"+{(when - t0).total_seconds():.3f}s"

    def summary(self, event: HistoryEvent) -> str:
        """What happened, in a few words."""
        try:
            ev = typed(event)
        except ValueError:  # a type this Keel does not know, or data that does not fit it
            return f"{event.type} {compact(event.data)}"
        match ev:
            case RunStarted():
                text = (
                    f"started {ev.workflow} (version {ev.version[:8]}) at "
                    f"{time_text(event.created_at)} with {_value(ev.input)}"
                )
                if isinstance(ev.schedule, str):
                    text += f" by schedule {ev.schedule}"
                if isinstance(ev.forked_from, str):
                    text += f", forked from {ev.forked_from} below seq {ev.fork_seq}"
                return text
            case StepCompleted():
                suffix = f"  (attempt {ev.attempt})" if ev.attempt > 1 else ""
                return f"→ {_value(ev.result)}{suffix}"
            case StepAttemptFailed():
                retry = ""
                if ev.retry_at is not None:
                    retry = (
                        f"; retry in {max(0.0, ev.retry_at - event.created_at.timestamp()):.2f}s"
                    )
                return f"attempt {ev.attempt} failed: {_cut(error_summary(ev.error))}{retry}"
            case StepDispatched():
                return f"dispatched to queue {ev.queue!r} (priority {ev.priority})"
            case StepFailed():
                attempts = "?" if ev.attempts is UNSET else ev.attempts
                return f"failed after {attempts} attempt(s): {_cut(error_summary(ev.error))}"
            case TimerStarted():
                self._timer_started[event.command or ""] = event.created_at
                return "sleep" if ev.duration is None else f"sleep {float(ev.duration)}s"
            case TimerFired():
                started = self._timer_started.get(event.command or "")
                if started is None:
                    return "timer fired"
                return f"timer fired (slept {(event.created_at - started).total_seconds():.2f}s)"
            case SignalAwaited():
                limit = "" if ev.timeout is None else f" (timeout {ev.timeout:g}s)"
                return f"waiting for signal {ev.name!r}{limit}"
            case SignalReceived():
                return f"received {_value(ev.payload)}"
            case SignalTimedOut():
                return "timed out" if ev.timeout is None else f"timed out after {ev.timeout:g}s"
            case SideEffect():
                return f"→ {_value(ev.value)}"
            case Patched():
                return f"patch {ev.patch!r}: new code path"
            case CancelRequested():
                return "cancel requested: pending work discarded, cleanup may run"
            case ChildStarted():
                return f"started child run {ev.child_run_id} (parent close: {ev.parent_close})"
            case ChildCompleted():
                return f"child {ev.child_run_id} → {_value(ev.result)}"
            case ChildFailed():
                return f"child {ev.child_run_id} failed: {_cut(error_summary(ev.error))}"
            case ChildCancelled():
                return f"child {ev.child_run_id} cancelled"
            case RunCompleted():
                return f"completed → {_value(ev.result)}"
            case RunFailed():
                return f"failed: {_cut(error_summary(ev.error))}"
            case RunCancelled():
                return f"cancelled ({ev.reason or 'no reason given'})"
            case RunContinued():
                return f"continued as new → {ev.continued_to} {_value(ev.input)}"
            case RunTerminated():
                return f"terminated ({ev.reason or 'no reason given'}): no cleanup ran"


def typed(event: HistoryEvent) -> Event:
    """The typed event of a history entry (``ValueError`` if there is none)."""
    return decode(EventType(event.type), msgspec.json.encode(event.data))


def _value(raw: msgspec.Raw) -> str:
    """A user value of an event, shortened."""
    return compact(msgspec.json.decode(raw))


def _cut(text: str, limit: int = SUMMARY_LIMIT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def name_width(events: Sequence[HistoryEvent]) -> int:
    """Column width that fits every command label (within reason)."""
    return min(max((len(command_label(e)) for e in events), default=3), 28)


def print_timeline(console: Console, events: Sequence[HistoryEvent]) -> None:
    """The body of ``keel runs history``: one fixed-width row per event."""
    timeline = Timeline(name_width=name_width(events))
    for event in events:
        console.print(timeline.row(event))


def make_console() -> Console:
    """A console on stdout; when that is not a terminal, wide enough not to break lines."""
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=200)
    return console
