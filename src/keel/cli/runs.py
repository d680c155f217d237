"""``keel runs list|show|history``: read-only views of the runs in a database."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click

from keel.cli import render
from keel.cli.common import (
    CliUsageError,
    db_option,
    json_option,
    resolve_db,
    since_option,
    with_client,
)
from keel.client import Client, HistoryEvent, RunInfo, RunList
from keel.core import codec
from keel.core.states import RunState
from keel.errors import RunNotFoundError
from keel.testing.replay import export_runs


@click.group("runs")
def runs() -> None:
    """Inspect runs: list them, show one, print its history, export journals."""


@runs.command("list")
@click.option("--workflow", "-w", metavar="NAME", help="Only runs of this workflow.")
@click.option(
    "--state",
    "-s",
    type=click.Choice([s.value for s in RunState]),
    help="Only runs in this state.",
)
@click.option(
    "--limit",
    "-n",
    type=click.IntRange(1, 1000),
    default=20,
    show_default=True,
    help="Runs per page.",
)
@click.option("--cursor", metavar="C", help="Continue from a previous page's cursor.")
@db_option
@json_option
def list_runs(
    workflow: str | None,
    state: str | None,
    limit: int,
    cursor: str | None,
    db: str | None,
    as_json: bool,
) -> None:
    """List runs, newest first."""

    async def fetch(client: Client) -> RunList:
        try:
            return await client.list(workflow=workflow, state=state, limit=limit, cursor=cursor)
        except ValueError as exc:  # the store rejects a malformed cursor
            raise CliUsageError(f"invalid --cursor: {exc}") from None

    page = with_client(resolve_db(db), fetch)
    if as_json:
        render.print_json({"runs": page.runs, "next_cursor": page.next_cursor})
        return
    console = render.make_console()
    if not page.runs:
        console.print("no runs" + (" match" if workflow or state or cursor else ""))
    else:
        console.print(render.runs_table(page.runs))
    if page.next_cursor:
        console.print(f"\nmore: keel runs list --cursor {page.next_cursor}", highlight=False)


@runs.command("show")
@click.argument("run_id")
@db_option
@json_option
def show_run(run_id: str, db: str | None, as_json: bool) -> None:
    """Show one run: state, times, lease, and its result or error."""

    async def fetch(client: Client) -> tuple[RunInfo, Any, Any, bool]:
        rec = await client.store.get_run(run_id)
        if rec is None:
            raise RunNotFoundError(run_id)
        info = replace(RunInfo.from_record(rec), waiting=await client.waiting(rec))
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
def run_history(run_id: str, db: str | None, as_json: bool) -> None:
    """Print a run's journal as a timeline."""

    async def fetch(client: Client) -> list[HistoryEvent]:
        return await client.history(run_id)

    events = with_client(resolve_db(db), fetch)
    if as_json:
        render.print_json({"run_id": run_id, "events": events})
        return
    render.print_timeline(render.make_console(), events)


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
