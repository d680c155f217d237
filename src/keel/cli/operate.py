"""``keel runs terminate|resume|retry|fork|prune``: operator actions on runs.

Each command acts on the runs named on the command line, or on every run the
filters select (those of ``keel runs list``); for more than one run it shows
how many first and asks before acting (``--yes`` does not ask, ``--dry-run``
only counts). The work is :mod:`keel.operations`, shared with the client and
the dashboard.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

import click

from keel.cli import render
from keel.cli.common import (
    CliUsageError,
    aware,
    db_option,
    import_apps,
    json_option,
    local_option,
    parse_time,
    resolve_db,
    since_option,
    time_option,
    with_client,
)
from keel.client import Client
from keel.core.states import TERMINAL_STATES, RunState
from keel.operations import BulkAction, BulkResult

F = TypeVar("F", bound=Callable[..., Any])

PAST_TENSE = {
    "cancel": "cancel requested for",
    "terminate": "terminated",
    "resume": "resumed",
    "retry": "retried",
}


def selection_options(fn: F) -> F:
    """RUN_IDs, or the filters of ``keel runs list``, and the confirmation options."""
    for option in reversed(
        [
            click.argument("run_ids", nargs=-1, metavar="[RUN_ID]..."),
            click.option(
                "--workflow", "-w", "workflows", multiple=True, metavar="NAME",
                help="Every run of NAME (repeatable).",
            ),
            click.option(
                "--state", "-s", "states", multiple=True,
                type=click.Choice([s.value for s in RunState]),
                help="Every run in this state (repeatable).",
            ),
            since_option,
            time_option("until", "Only runs started before TIME or more than AGE ago."),
            click.option("--parent", metavar="RUN_ID", help="Every child run of RUN_ID."),
            click.option("--yes", "-y", is_flag=True, help="Do not ask before acting."),
            click.option("--dry-run", is_flag=True, help="Only count the runs it would act on."),
            db_option,
            json_option,
            local_option,
        ]
    ):  # fmt: skip
        fn = option(fn)
    return fn


def _run_bulk(
    action: str,
    run_ids: tuple[str, ...],
    filters: dict[str, Any],
    *,
    yes: bool,
    dry_run: bool,
    db: str | None,
    as_json: bool,
    act: Callable[[Client, str], Awaitable[str]],
    **options: Any,
) -> None:
    """One run: act on it and say what happened. Several (ids or filters): count,
    confirm, then act on each a page at a time and sum up."""
    selected = any(v not in (None, ()) for v in filters.values())
    if run_ids and selected:
        raise click.UsageError("give RUN_IDs or filters (-w, -s, --since, --until, --parent)")
    if not run_ids and not selected:
        raise click.UsageError("name the runs: RUN_IDs, or filters (-w, -s, --since, ...)")
    url = resolve_db(db)
    if len(run_ids) == 1 and not dry_run:
        line = with_client(url, lambda client: act(client, run_ids[0]))
        render.print_json({"run_id": run_ids[0], "outcome": line}) if as_json else click.echo(line)
        return
    where = {**filters, "since": aware(filters["since"]), "until": aware(filters["until"])}

    async def count(client: Client) -> int:
        return len(run_ids) if run_ids else await client.count(**where)

    n = with_client(url, count)
    noun = f"{n} run{'s' if n != 1 else ''}"
    if dry_run:
        if as_json:
            render.print_json({"action": action, "count": n, "dry_run": True})
        else:
            click.echo(f"would {action} {noun} (dry run: nothing done)")
        return
    if n == 0:
        click.echo(f"no runs to {action}")
        return
    if not yes:
        click.confirm(f"{action} {noun}?", abort=True, err=True)

    async def go(client: Client) -> BulkResult:
        ids = list(run_ids) if run_ids else None
        kind = cast(BulkAction, action)
        return await client.bulk(kind, ids, **(where if ids is None else {}), **options)

    result = with_client(url, go)
    if as_json:
        render.print_json(result)
        return
    click.echo(f"{PAST_TENSE[action]} {result.done} of {noun}; {result.refused} refused")
    for run_id, why in result.refusals:
        click.echo(f"  {run_id}: {why}")
    if result.refused > len(result.refusals):
        click.echo(f"  ... and {result.refused - len(result.refusals)} more")


def _filters(
    workflows: tuple[str, ...],
    states: tuple[str, ...],
    since: datetime | timedelta | None,
    until: datetime | timedelta | None,
    parent: str | None,
) -> dict[str, Any]:
    return {
        "workflow": workflows,
        "state": states,
        "since": since,
        "until": until,
        "parent_run_id": parent,
    }


@click.command("terminate")
@selection_options
@click.option("--reason", default="", help="Why (journaled with the run's end).")
def terminate(
    run_ids: tuple[str, ...],
    workflows: tuple[str, ...],
    states: tuple[str, ...],
    since: datetime | timedelta | None,
    until: datetime | timedelta | None,
    parent: str | None,
    yes: bool,
    dry_run: bool,
    db: str | None,
    as_json: bool,
    reason: str,
) -> None:
    """End runs at once, without running their cleanup code.

    A worker holding a run loses it (its next write is refused); open
    dispatched steps are dropped; children are closed as a cancelled parent
    closes them. Use `keel cancel` to let a run clean up instead.
    """

    async def act(client: Client, run_id: str) -> str:
        await client.terminate(run_id, reason=reason)
        return f"run {run_id} terminated"

    _run_bulk(
        "terminate",
        run_ids,
        _filters(workflows, states, since, until, parent),
        yes=yes,
        dry_run=dry_run,
        db=db,
        as_json=as_json,
        act=act,
        reason=reason,
    )


@click.command("resume")
@selection_options
@click.option(
    "--force", is_flag=True, help="Take a run from a worker even if it wrote to it lately."
)
@click.option("--fire-timers", is_flag=True, help="Fire the runs' pending keel.sleep timers now.")
def resume(
    run_ids: tuple[str, ...],
    workflows: tuple[str, ...],
    states: tuple[str, ...],
    since: datetime | timedelta | None,
    until: datetime | timedelta | None,
    parent: str | None,
    yes: bool,
    dry_run: bool,
    db: str | None,
    as_json: bool,
    force: bool,
    fire_timers: bool,
) -> None:
    """Make parked, stuck or cancel-requested runs runnable now.

    A waiting run is made due; a stuck run (its lease expired, or nothing
    written to it for 60 s while a worker holds it) is taken from its worker;
    a cancel request not yet delivered is withdrawn. Durable sleeps still wait
    unless --fire-timers.
    """

    async def act(client: Client, run_id: str) -> str:
        info = await client.resume(run_id, force=force, fire_timers=fire_timers)
        return f"run {run_id} resumed ({info.state}, due now)"

    _run_bulk(
        "resume",
        run_ids,
        _filters(workflows, states, since, until, parent),
        yes=yes,
        dry_run=dry_run,
        db=db,
        as_json=as_json,
        act=act,
        force=force,
        fire_timers=fire_timers,
    )


@click.command("retry")
@selection_options
@click.option(
    "--app", "apps", multiple=True, metavar="MODULE", help="Import to know the current code."
)
@click.option("--version", metavar="V", help="The workflow version the new run takes.")
@click.option("--run-id", "new_run_id", metavar="ID", help="The new run's id (one run only).")
@click.option("--no-redeliver", is_flag=True, help="Do not send signals again to the new run.")
def retry(
    run_ids: tuple[str, ...],
    workflows: tuple[str, ...],
    states: tuple[str, ...],
    since: datetime | timedelta | None,
    until: datetime | timedelta | None,
    parent: str | None,
    yes: bool,
    dry_run: bool,
    db: str | None,
    as_json: bool,
    apps: tuple[str, ...],
    version: str | None,
    new_run_id: str | None,
    no_redeliver: bool,
) -> None:
    """Start new runs that pick up failed, cancelled or terminated runs with the
    current code, reusing their journals up to the failure.

    The new run's version is --version, else the current one of the --app
    modules, else the one version live workers run.
    """
    import_apps(apps)
    if new_run_id is not None and len(run_ids) != 1:
        raise CliUsageError("--run-id names the new run of one RUN_ID")
    if len(run_ids) != 1 and (version or no_redeliver):
        raise CliUsageError("--version and --no-redeliver go with one RUN_ID")

    async def act(client: Client, run_id: str) -> str:
        handle = await client.retry(
            run_id, new_run_id=new_run_id, version=version, redeliver_signals=not no_redeliver
        )
        info = await client.get(handle.run_id)
        return f"run {run_id} retried as {handle.run_id} (journal copied below seq {info.fork_seq})"

    _run_bulk(
        "retry",
        run_ids,
        _filters(workflows, states, since, until, parent),
        yes=yes,
        dry_run=dry_run,
        db=db,
        as_json=as_json,
        act=act,
    )


@click.command("fork")
@click.argument("run_id")
@click.option(
    "--at", "at", required=True, metavar="COMMAND|SEQ",
    help="Re-run from this command (e.g. step:charge#0, from `keel runs history`) or seq.",
)  # fmt: skip
@click.option(
    "--app", "apps", multiple=True, metavar="MODULE", help="Import to know the current code."
)
@click.option("--version", metavar="V", help="The workflow version the new run takes.")
@click.option("--run-id", "new_run_id", metavar="ID", help="The new run's id.")
@click.option("--no-redeliver", is_flag=True, help="Do not send signals again to the new run.")
@db_option
@json_option
def fork(
    run_id: str,
    at: str,
    apps: tuple[str, ...],
    version: str | None,
    new_run_id: str | None,
    no_redeliver: bool,
    db: str | None,
    as_json: bool,
) -> None:
    """Start a new run from RUN_ID's journal up to a command, running the current
    code from there (RUN_ID is not changed)."""
    import_apps(apps)
    point: str | int = int(at) if at.isdigit() else at

    async def go(client: Client) -> tuple[str, int | None]:
        handle = await client.fork(
            run_id,
            point,
            new_run_id=new_run_id,
            version=version,
            redeliver_signals=not no_redeliver,
        )
        return handle.run_id, (await client.get(handle.run_id)).fork_seq

    new, seq = with_client(resolve_db(db), go)
    if as_json:
        render.print_json({"run_id": new, "forked_from": run_id, "fork_seq": seq})
    else:
        click.echo(f"run {run_id} forked as {new} (journal copied below seq {seq})")


@click.command("prune")
@click.option(
    "--older-than", "older_than", required=True, metavar="AGE",
    callback=lambda _c, _p, v: parse_time(v, "--older-than"),
    help="Delete runs that ended more than AGE ago (30m, 12h, 30d, 2w).",
)  # fmt: skip
@click.option(
    "--state", "-s", "states", multiple=True,
    type=click.Choice(sorted(s.value for s in TERMINAL_STATES)),
    help="Only runs that ended in this state (repeatable).",
)  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Only count the runs it would delete.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before deleting.")
@click.option("--batch", type=click.IntRange(1, 10_000), default=500, show_default=True)
@db_option
@json_option
def prune(
    older_than: datetime | timedelta,
    states: tuple[str, ...],
    dry_run: bool,
    yes: bool,
    batch: int,
    db: str | None,
    as_json: bool,
) -> None:
    """Delete ended runs with their journals, signals, tasks and snapshots.

    Only runs whose continue-as-new chain, parent and children have all ended
    (the last of the chain more than AGE ago) are deleted, a batch at a time.
    """
    if not isinstance(older_than, timedelta):
        raise click.BadParameter("give an age like 30d, not a time", param_hint="--older-than")
    url = resolve_db(db)
    state = list(states) or None

    async def count(client: Client) -> int:
        return await client.prune(older_than, state=state, dry_run=True)

    n = with_client(url, count)
    noun = f"{n} run{'s' if n != 1 else ''}"
    if dry_run or n == 0:
        if as_json:
            render.print_json({"count": n, "dry_run": dry_run})
        else:
            click.echo(
                f"would delete {noun} (dry run: nothing done)" if dry_run else "no runs to prune"
            )
        return
    if not yes:
        click.confirm(f"delete {noun} and their journals?", abort=True, err=True)

    async def go(client: Client) -> int:
        return await client.prune(older_than, state=state, batch=batch)

    deleted = with_client(url, go)
    if as_json:
        render.print_json({"deleted": deleted})
    else:
        click.echo(f"deleted {deleted} run{'s' if deleted != 1 else ''}")


#: The commands ``keel runs`` gets from this module.
COMMANDS = [terminate, resume, retry, fork, prune]
