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
from keel.core.events import EventType
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
        d, t = event.data, event.type
        if t == EventType.RUN_STARTED:
            version = str(d.get("version", ""))[:8]
            text = (
                f"started {d.get('workflow')} (version {version}) at "
                f"{time_text(event.created_at)} with {compact(d.get('input'))}"
            )
            if d.get("schedule") is not None:
                text += f" by schedule {d['schedule']}"
            return text
        if t == EventType.STEP_COMPLETED:
            attempt = d.get("attempt")
            suffix = f"  (attempt {attempt})" if isinstance(attempt, int) and attempt > 1 else ""
            return f"→ {compact(d.get('result'))}{suffix}"
        if t == EventType.STEP_ATTEMPT_FAILED:
            retry = ""
            retry_at = d.get("retry_at")
            if isinstance(retry_at, int | float):
                retry = f"; retry in {max(0.0, retry_at - event.created_at.timestamp()):.2f}s"
            return (
                f"attempt {d.get('attempt')} failed: {_cut(error_summary(d.get('error')))}{retry}"
            )
        if t == EventType.STEP_DISPATCHED:
            return f"dispatched to queue {d.get('queue')!r} (priority {d.get('priority')})"
        if t == EventType.STEP_FAILED:
            err = _cut(error_summary(d.get("error")))
            return f"failed after {d.get('attempts')} attempt(s): {err}"
        if t == EventType.TIMER_STARTED:
            self._timer_started[event.command or ""] = event.created_at
            duration = d.get("duration")
            return f"sleep {float(duration)}s" if isinstance(duration, int | float) else "sleep"
        if t == EventType.TIMER_FIRED:
            started = self._timer_started.get(event.command or "")
            if started is None:
                return "timer fired"
            return f"timer fired (slept {(event.created_at - started).total_seconds():.2f}s)"
        if t == EventType.SIGNAL_AWAITED:
            timeout = d.get("timeout")
            limit = f" (timeout {timeout:g}s)" if isinstance(timeout, int | float) else ""
            return f"waiting for signal {d.get('name')!r}{limit}"
        if t == EventType.SIGNAL_RECEIVED:
            return f"received {compact(d.get('payload'))}"
        if t == EventType.SIGNAL_TIMED_OUT:
            timeout = d.get("timeout")
            return (
                f"timed out after {timeout:g}s" if isinstance(timeout, int | float) else "timed out"
            )
        if t == EventType.SIDE_EFFECT:
            return f"→ {compact(d.get('value'))}"
        if t == EventType.PATCHED:
            return f"patch {d.get('patch')!r}: new code path"
        if t == EventType.CANCEL_REQUESTED:
            return "cancel requested: pending work discarded, cleanup may run"
        if t == EventType.CHILD_STARTED:
            return (
                f"started child run {d.get('child_run_id')} (parent close: {d.get('parent_close')})"
            )
        if t == EventType.CHILD_COMPLETED:
            return f"child {d.get('child_run_id')} → {compact(d.get('result'))}"
        if t == EventType.CHILD_FAILED:
            return f"child {d.get('child_run_id')} failed: {_cut(error_summary(d.get('error')))}"
        if t == EventType.CHILD_CANCELLED:
            return f"child {d.get('child_run_id')} cancelled"
        if t == EventType.RUN_COMPLETED:
            return f"completed → {compact(d.get('result'))}"
        if t == EventType.RUN_FAILED:
            return f"failed: {_cut(error_summary(d.get('error')))}"
        if t == EventType.RUN_CANCELLED:
            return f"cancelled ({d.get('reason', 'no reason given')})"
        if t == EventType.RUN_CONTINUED:
            return f"continued as new → {d.get('continued_to')} {compact(d.get('input'))}"
        return f"{t} {compact(d)}"


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
