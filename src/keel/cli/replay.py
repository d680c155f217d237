"""``keel replay``: replay stored or exported journals against the current code."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from keel.cli import render
from keel.cli.common import (
    CliUsageError,
    aware,
    db_option,
    import_apps,
    json_option,
    local_option,
    resolve_db,
    since_option,
    with_client,
)
from keel.client import Client
from keel.core.states import RunState
from keel.replay import JournalVerdict, ReplayCheckReport, check_files, check_runs

_STYLES = {"ok": "green", "diverged": "bold red", "skipped": "yellow", "nothing_to_check": "dim"}


@click.command("replay")
@click.argument(
    "paths",
    nargs=-1,
    type=click.Path(exists=True, path_type=Path),
    metavar="[FILE_OR_DIR]...",
)
@click.option(
    "--app",
    "apps",
    multiple=True,
    metavar="MODULE",
    help="Module defining the workflows: the code to check (repeatable). Graph runs "
    "in a database are checked from their stored specs without it.",
)
@click.option(
    "--workflow",
    "-w",
    "workflows",
    multiple=True,
    metavar="NAME",
    help="Only runs of NAME (repeatable).",
)
@since_option
@click.option(
    "--state",
    "-s",
    "states",
    multiple=True,
    type=click.Choice([s.value for s in RunState]),
    help="Only runs in this state (repeatable).",
)
@click.option(
    "--limit", "-n", type=click.IntRange(min=1), help="Check at most N runs, newest first."
)
@click.option(
    "--strict", is_flag=True, help="Fail also when a journal's workflow is not registered."
)
@click.option("--verbose", "-v", is_flag=True, help="List every journal, not only problems.")
@db_option
@json_option
@local_option
@click.pass_context
def replay(
    ctx: click.Context,
    paths: tuple[Path, ...],
    apps: tuple[str, ...],
    workflows: tuple[str, ...],
    since: datetime | timedelta | None,
    states: tuple[str, ...],
    limit: int | None,
    strict: bool,
    verbose: bool,
    db: str | None,
    as_json: bool,
) -> None:
    """Replay journals against the code of the --app modules; report every divergence.

    Without FILE_OR_DIR, the runs in the database (all of them, or those the
    filters select, newest first). With FILE_OR_DIR, journal files exported by
    `keel runs export` (a directory: its *.json files).

    A run that failed before any of its code ran (its input did not decode)
    has nothing to replay: it is counted as "nothing to check", not diverged.

    A graph run whose graph the modules do not register at the run's version
    is checked against the graph's spec stored in the database (no user code:
    node results come from the journal; arguments are not compared).

    Exit status: 0 when every journal replays, 1 when any would diverge (or,
    with --strict, names a workflow the modules do not register), 2 for usage
    errors.
    """
    if paths:
        given = [
            name
            for name, value in (
                ("--db", db),
                ("--workflow", workflows),
                ("--since", since),
                ("--state", states),
                ("--limit", limit),
            )
            if value
        ]
        if given:
            raise click.UsageError(f"{', '.join(given)} select runs in a database, not files")
    since = aware(since)
    import_apps(apps)
    if paths:
        try:
            report = check_files(paths)
        except ValueError as exc:  # not a journal exported by Keel
            raise CliUsageError(str(exc)) from None
    else:

        async def go(client: Client) -> ReplayCheckReport:
            return await check_runs(
                client, workflow=workflows, state=states, since=since, limit=limit
            )

        report = with_client(resolve_db(db), go)
    passed = report.passed(strict=strict)
    if as_json:
        render.print_json(
            {
                "passed": passed,
                "checked": len(report.results),
                "ok": len(report.ok),
                "diverged": len(report.diverged),
                "skipped": len(report.skipped),
                "nothing_to_check": len(report.nothing_to_check),
                "results": report.results,
            }
        )
    else:
        _print_report(render.make_console(), report, verbose=verbose, strict=strict)
    if not passed:
        ctx.exit(1)


def _print_report(
    console: Console, report: ReplayCheckReport, *, verbose: bool, strict: bool
) -> None:
    if not report.results:
        console.print("no runs match: nothing to replay")
        return
    rows = _rows(report, verbose=verbose)
    if rows:
        table = Table(box=None, header_style="bold", pad_edge=False)
        for title in ("RUN", "WORKFLOW", "RESULT", "AT", "DIFFERENCE"):
            table.add_column(title, no_wrap=title in ("RESULT", "AT"), overflow="fold")
        for row in rows:
            table.add_row(*row)
        console.print(table)
        console.print()
    style = "green" if report.passed(strict=strict) else "bold red"
    console.print(Text(report.summary(), style=style))
    if report.skipped and not strict:
        console.print(
            "skipped journals do not fail the check (--strict makes them)", style="yellow"
        )


def _rows(report: ReplayCheckReport, *, verbose: bool) -> list[tuple[Any, ...]]:
    """Table rows: every divergence; skipped runs one row per reason unless ``verbose``."""
    rows: list[tuple[Any, ...]] = []
    grouped: Counter[tuple[str, str]] = Counter()
    for v in report.results:
        if v.status == "skipped" and not verbose:
            grouped[(v.workflow, v.message)] += 1
        elif v.status not in ("ok", "nothing_to_check") or verbose:
            rows.append(_row(v))
    for (workflow, message), count in grouped.items():
        runs = f"{count} journal{'s' if count != 1 else ''}"
        rows.append((runs, workflow, Text("skipped", style=_STYLES["skipped"]), "-", message))
    return rows


def _row(v: JournalVerdict) -> tuple[Any, ...]:
    if v.status == "diverged" and v.recorded is not None:
        difference = f"recorded: {v.recorded}\ncode:     {v.requested}"
    elif v.status == "ok":
        difference = f"replays ({v.outcome}, {v.events} events)"
    else:
        difference = v.message
    return (
        v.source or v.run_id,
        v.workflow,
        Text(v.status.replace("_", " "), style=_STYLES[v.status]),
        "-" if v.position is None else str(v.position),
        difference,
    )
