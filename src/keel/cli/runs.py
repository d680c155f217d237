"""``keel runs list|show|history``: read-only views of the runs in a database."""

from __future__ import annotations

import json
import shlex
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from keel.cli import render
from keel.cli.common import (
    CliUsageError,
    aware,
    db_option,
    json_option,
    local_option,
    resolve_db,
    since_option,
    time_option,
    with_client,
)
from keel.client import Client, HistoryEvent, RunInfo, RunList
from keel.core import codec
from keel.core.fold import CommandView
from keel.core.states import RunState
from keel.errors import ConfigurationError, RunNotFoundError
from keel.replay import export_runs
from keel.store.base import RUN_SORTS, RunSort


@click.group("runs")
def runs() -> None:
    """Inspect and operate runs: list, show, history, export; terminate, resume,
    retry, fork, prune."""


DEFAULT_PAGE = 20


@runs.command("list")
@click.option(
    "--workflow",
    "-w",
    "workflows",
    multiple=True,
    metavar="NAME",
    help="Only runs of NAME (repeatable: runs of any of them).",
)
@click.option(
    "--state",
    "-s",
    "states",
    multiple=True,
    type=click.Choice([s.value for s in RunState]),
    help="Only runs in this state (repeatable: runs in any of them).",
)
@since_option
@time_option("until", "Only runs started before TIME (ISO 8601) or more than AGE ago (2h, 7d).")
@click.option("--parent", metavar="RUN_ID", help="Only the child runs of RUN_ID.")
@click.option(
    "--limit",
    "-n",
    type=click.IntRange(1, 1000),
    default=DEFAULT_PAGE,
    show_default=True,
    help="Runs per page.",
)
@click.option(
    "--sort",
    type=click.Choice(list(RUN_SORTS)),
    default="created",
    show_default=True,
    help="Order by creation time, end time (ended runs only), workflow or state "
    "(then creation time).",
)
@click.option(
    "--asc",
    "ascending",
    is_flag=True,
    help="Ascending: oldest first, A to Z (default: descending).",
)
@click.option("--cursor", metavar="C", help="Continue from a previous page's cursor.")
@click.option("--count", is_flag=True, help="Print how many runs match (every page), not them.")
@db_option
@json_option
@local_option
def list_runs(
    workflows: tuple[str, ...],
    states: tuple[str, ...],
    since: datetime | timedelta | None,
    until: datetime | timedelta | None,
    parent: str | None,
    limit: int,
    sort: RunSort,
    ascending: bool,
    cursor: str | None,
    count: bool,
    db: str | None,
    as_json: bool,
) -> None:
    """List runs, newest first (filters combine: runs matching all of them);
    --sort and --asc choose another order.

    A relative --since/--until is fixed when the command runs: the "more:"
    line repeats every filter with absolute times, so later pages are the
    same selection.
    """
    if count and cursor:
        raise click.UsageError("--count counts every page: leave --cursor out")
    since, until = aware(since), aware(until)

    async def fetch(client: Client) -> tuple[RunList | int, float | None, float | None]:
        now = await client.store.now()  # ages count back from the database's clock
        start, end = _epoch(since, now), _epoch(until, now)
        where: dict[str, Any] = {
            "workflow": workflows,
            "state": states,
            "since": start,
            "until": end,
            "parent_run_id": parent,
        }
        if count:
            return await client.count(**where), start, end
        try:
            page = await client.list(
                limit=limit, cursor=cursor, sort=sort, ascending=ascending, **where
            )
        except ConfigurationError as exc:
            if cursor is None:
                raise
            raise CliUsageError(f"invalid --cursor: {exc}") from None  # a malformed one
        return page, start, end

    found, start, end = with_client(resolve_db(db), fetch)
    if isinstance(found, int):
        if as_json:
            render.print_json({"count": found})
        else:
            click.echo(found)
        return
    page = found
    if as_json:
        render.print_json({"runs": page.runs, "next_cursor": page.next_cursor})
        return
    console = render.make_console()
    filtered = workflows or states or since or until or parent
    if not page.runs:
        console.print("no runs" + (" match" if filtered or cursor else ""))
    else:
        console.print(render.runs_table(page.runs))
    if page.next_cursor:
        words = ["keel", "runs", "list"]
        words += [w for name in workflows for w in ("-w", name)]
        words += [w for state in states for w in ("-s", state)]
        for option, bound in (("--since", start), ("--until", end)):
            if bound is not None:
                words += [option, _iso(bound)]
        if parent is not None:
            words += ["--parent", parent]
        if limit != DEFAULT_PAGE:
            words += ["--limit", str(limit)]
        if sort != "created":
            words += ["--sort", sort]
        if ascending:
            words += ["--asc"]
        words += ["--cursor", page.next_cursor]
        console.print(f"\nmore: {shlex.join(words)}", highlight=False, markup=False)


def _epoch(when: datetime | timedelta | None, now: float) -> float | None:
    if when is None:
        return None
    if isinstance(when, timedelta):
        return now - when.total_seconds()
    return when.timestamp()


def _iso(epoch: float) -> str:
    """An exact ISO 8601 UTC time for a command line (microseconds kept)."""
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


@runs.command("show")
@click.argument("run_id")
@db_option
@json_option
@local_option
def show_run(run_id: str, db: str | None, as_json: bool) -> None:
    """Show one run: state, times, lease, and its result or error."""

    async def fetch(client: Client) -> tuple[RunInfo, Any, Any, bool]:
        rec = await client.store.reads.get_run(run_id)
        if rec is None:
            raise RunNotFoundError(run_id)
        forks = tuple(f.run_id for f in await client.store.admin.forks(run_id))
        info = replace(RunInfo.from_record(rec), waiting=await client.waiting(rec), forks=forks)
        input_ = codec.decode(rec.input, what=f"input of run {run_id!r}")
        has_result = rec.state is RunState.COMPLETED
        result = codec.decode(rec.result or b"null", what=f"result of run {run_id!r}")
        return info, input_, result, has_result

    info, input_, result, has_result = with_client(resolve_db(db), fetch)
    if as_json:
        doc = render.to_builtins(info)
        doc.update(input=input_, result=result if has_result else None)
        render.print_json(doc)
        return
    render.run_details(
        render.make_console(), info, input_=input_, result=result, has_result=has_result
    )


@runs.command("history")
@click.argument("run_id")
@db_option
@json_option
@local_option
def run_history(run_id: str, db: str | None, as_json: bool) -> None:
    """Print a run's journal as a timeline."""

    async def fetch(client: Client) -> list[HistoryEvent]:
        return await client.history(run_id)

    events = with_client(resolve_db(db), fetch)
    if as_json:
        render.print_json({"run_id": run_id, "events": events})
        return
    render.print_timeline(render.make_console(), events)


@runs.command("steps")
@click.argument("run_id")
@db_option
@json_option
def run_steps(run_id: str, db: str | None, as_json: bool) -> None:
    """Each command of a run (step, sleep, signal wait, child, ...): status,
    attempts, a step's input, value or error, in the order first journaled
    (from the journal; no workflow code runs). For a graph run's nodes: keel
    graph show."""

    async def fetch(client: Client) -> list[CommandView]:
        return await client.steps(run_id)

    found = with_client(resolve_db(db), fetch)
    if as_json:
        render.print_json([_step_doc(c) for c in found])
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("COMMAND", "STATUS", "ATTEMPTS", "INPUT", "VALUE OR ERROR"):
        table.add_column(column)
    for c in found:
        if c.error:
            shown = f"{c.error.get('type', '')}: {c.error.get('message', '')}"
        else:
            shown = "" if c.value is None else c.value.decode(errors="replace")
        attempts = str(len(c.attempts) or "")
        table.add_row(c.command, c.status, attempts, _input_text(c), _cut(shown, 60))
    render.make_console().print(table)


def _input_text(c: CommandView) -> str:
    """A step's input on one line; the size of one too large to be journaled."""
    if c.input is not None:
        return _cut(c.input.decode(errors="replace"), 40)
    if c.input_size is not None:
        return f"({c.input_size:,} bytes, not journaled)"
    return ""


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _step_doc(c: CommandView) -> dict[str, Any]:
    return {
        "command": c.command,
        "kind": c.kind,
        "name": c.name,
        "status": c.status,
        "input": None if c.input is None else json.loads(c.input),
        "input_size": c.input_size,
        "args_hash": c.args_hash,
        "value": None if c.value is None else json.loads(c.value),
        "error": c.error,
        "attempts": [
            {
                "number": a.number,
                "outcome": a.outcome,
                "started_at": a.started_at,
                "ended_at": a.ended_at,
                "worker": a.worker,
                "error": a.error,
            }
            for a in c.attempts
        ],
        "first_seq": c.first_seq,
        "last_seq": c.last_seq,
        "started_at": c.started_at,
        "updated_at": c.updated_at,
    }


@runs.command("export")
@click.argument("run_ids", nargs=-1, metavar="[RUN_ID]...")
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write <run id>.json files to (created if missing).",
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
@click.option("--limit", "-n", type=click.IntRange(min=1), help="At most N runs, newest first.")
@db_option
@local_option
def export(
    run_ids: tuple[str, ...],
    output: Path,
    workflows: tuple[str, ...],
    since: datetime | timedelta | None,
    states: tuple[str, ...],
    limit: int | None,
    db: str | None,
) -> None:
    """Write journals as JSON files that `keel replay FILE_OR_DIR` checks.

    The runs named by RUN_IDs, or those the filters select (all runs when none
    is given). Commit them as golden journals to replay in tests and CI.
    """
    if run_ids and (workflows or since or states or limit):
        raise click.UsageError("give RUN_IDs or filters (--workflow, --since, --state, --limit)")
    since = aware(since)

    async def go(client: Client) -> list[Path]:
        return await export_runs(
            client,
            output,
            run_ids=run_ids,
            workflow=workflows,
            state=states,
            since=since,
            limit=limit,
        )

    written = with_client(resolve_db(db), go)
    n = len(written)
    click.echo(f"exported {n} journal{'s' if n != 1 else ''} to {output}")
