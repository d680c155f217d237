"""``keel schedules list|show|create|pause|resume|delete``: schedules in a database.

Workers fire schedules (every ``keel worker`` that has the workflow); these
commands only manage them.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import click

from keel.cli import render
from keel.cli.common import (
    CliUsageError,
    Seconds,
    checked_arguments,
    db_option,
    import_apps,
    json_option,
    local_option,
    resolve_db,
    with_client,
    workflow_call,
)
from keel.client import Client
from keel.errors import InvalidScheduleError
from keel.schedules import ScheduleInfo, new_schedule
from keel.workflow.registry import default_registry


@click.group("schedules")
def schedules() -> None:
    """Manage schedules: runs started on a cron expression or once at a time."""


@schedules.command("list")
@click.option("--workflow", "-w", metavar="NAME", help="Only schedules of this workflow.")
@db_option
@json_option
@local_option
def list_schedules(workflow: str | None, db: str | None, as_json: bool) -> None:
    """List schedules by id: state, when they fire, their next and last run."""

    async def fetch(client: Client) -> list[ScheduleInfo]:
        return await client.list_schedules(workflow=workflow)

    found = with_client(resolve_db(db), fetch)
    if as_json:
        render.print_json({"schedules": found})
        return
    console = render.make_console()
    if not found:
        console.print("no schedules" + (" match" if workflow else ""))
    else:
        console.print(render.schedules_table(found))


@schedules.command("show")
@click.argument("schedule_id")
@db_option
@json_option
@local_option
def show_schedule(schedule_id: str, db: str | None, as_json: bool) -> None:
    """Show one schedule, with the arguments its runs get."""

    async def fetch(client: Client) -> ScheduleInfo:
        return await client.get_schedule(schedule_id)

    info = with_client(resolve_db(db), fetch)
    if as_json:
        render.print_json(info)
        return
    render.schedule_details(render.make_console(), info)


@schedules.command("create")
@workflow_call
@click.option(
    "--cron",
    metavar="EXPR",
    help="Recurring: 'minute hour day month weekday' (or seconds first, or @daily...).",
)
@click.option(
    "--at",
    metavar="TIME",
    help="Once, at an ISO-8601 time with a zone (2030-01-31T09:00Z, ...+01:00), "
    "or without one and --tz.",
)
@click.option(
    "--timezone",
    "--tz",
    "timezone",
    metavar="ZONE",
    help="IANA time zone of --cron [default: UTC], or of an --at without an offset.",
)
@click.option("--id", "schedule_id", metavar="ID", help="Schedule id [default: a new UUIDv7].")
@click.option(
    "--overlap",
    type=click.Choice(["allow", "skip"]),
    default="allow",
    show_default=True,
    help="skip: start no run while the schedule's last run is unfinished.",
)
@click.option(
    "--catchup-window",
    type=Seconds(),
    metavar="SECONDS",
    help="Skip a tick found later than this (after downtime) [default: never skip].",
)
@db_option
@json_option
@local_option
def create_schedule(
    workflow: str,
    args: tuple[str, ...],
    apps: tuple[str, ...],
    kwargs: tuple[str, ...],
    cron: str | None,
    at: str | None,
    timezone: str | None,
    schedule_id: str | None,
    overlap: str,
    catchup_window: float | None,
    db: str | None,
    as_json: bool,
) -> None:
    """Schedule runs of WORKFLOW; each ARG_JSON is one positional argument.

    Give --cron (recurring) or --at (once). Prints the schedule id on stdout.
    Every tick starts one run, id SCHEDULE_ID@TICK (in UTC), on whichever
    worker has the workflow.
    """
    if (cron is None) == (at is None):
        raise click.UsageError("give exactly one of --cron and --at")
    if at is not None:
        _check_at(at, timezone)
    import_apps(apps)
    wf = default_registry.get(workflow)
    call_args, call_kwargs = checked_arguments(wf, args, kwargs)
    options: dict[str, Any] = {
        "cron": cron,
        "at": at,
        "timezone": timezone,
        "overlap": overlap,
        "catchup_window": catchup_window,
    }
    try:  # the client checks this too, but only after opening (creating) the database
        new_schedule(
            wf,
            call_args,
            call_kwargs,
            schedule_id=schedule_id or "-",
            cron_expr=cron,
            at=at,
            timezone=timezone,
            overlap=overlap,
            catchup_window=catchup_window,
            now=time.time(),
        )
    except InvalidScheduleError as exc:  # a bad option value: a usage error
        raise CliUsageError(str(exc)) from None

    async def go(client: Client) -> ScheduleInfo:
        return await client.schedule(
            wf, *call_args, schedule_id=schedule_id, **options, **call_kwargs
        )

    info = with_client(resolve_db(db), go, existing=False)
    if as_json:
        render.print_json(info)
        return
    click.echo(info.schedule_id)
    click.secho(f"next run: {render.time_text(info.next_fire_at)}", err=True, fg="cyan")


def _check_at(text: str, timezone: str | None) -> None:
    """Refuse an ``--at`` that is not ISO 8601, or has no zone and no ``--tz``: a
    one-shot time is never guessed (the message names the CLI's flags)."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise CliUsageError(
            f"--at {text!r} is not an ISO-8601 date and time (e.g. 2030-01-31T09:00Z)"
        ) from None
    if when.tzinfo is None and timezone is None:
        raise CliUsageError(
            f"--at {text!r} has no time zone: add one ({text}Z for UTC, or an offset "
            f"like {text}+01:00) or pass --tz ZONE (e.g. --tz Europe/Paris)"
        )


@schedules.command("pause")
@click.argument("schedule_id")
@db_option
def pause_schedule(schedule_id: str, db: str | None) -> None:
    """Stop a schedule starting runs (runs already started go on)."""

    async def go(client: Client) -> ScheduleInfo:
        return await client.pause_schedule(schedule_id)

    with_client(resolve_db(db), go)
    click.echo(f"schedule {schedule_id} paused")


@schedules.command("resume")
@click.argument("schedule_id")
@db_option
@local_option
def resume_schedule(schedule_id: str, db: str | None) -> None:
    """Resume a paused schedule (ticks missed while paused are skipped)."""

    async def go(client: Client) -> ScheduleInfo:
        return await client.resume_schedule(schedule_id)

    info = with_client(resolve_db(db), go)
    if info.next_fire_at is None:
        click.echo(f"schedule {schedule_id} resumed; it has nothing left to run")
    else:
        click.echo(
            f"schedule {schedule_id} resumed; next run: {render.time_text(info.next_fire_at)}"
        )


@schedules.command("delete")
@click.argument("schedule_id")
@db_option
def delete_schedule(schedule_id: str, db: str | None) -> None:
    """Delete a schedule; the runs it started are kept."""

    async def go(client: Client) -> None:
        await client.delete_schedule(schedule_id)

    with_client(resolve_db(db), go)
    click.echo(f"schedule {schedule_id} deleted")
