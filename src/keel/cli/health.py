"""``keel health``: is the store reachable, its schema current, a worker alive,
and no run overdue? Exit 0 when healthy, 1 when not."""

from __future__ import annotations

import asyncio
import json

import click

from keel.cli.common import CliError, db_option, json_option, open_existing, resolve_db
from keel.observe.health import DEFAULT_OVERDUE_AFTER, HealthReport, check, liveness, unreachable


@click.command("health")
@db_option
@click.option(
    "--overdue-after",
    type=click.FloatRange(min=0),
    default=DEFAULT_OVERDUE_AFTER,
    show_default=True,
    metavar="SECONDS",
    help="Unhealthy when a due run has waited longer than this to be claimed.",
)
@click.option(
    "--live", is_flag=True, help="Liveness only: does the store answer (what /healthz checks)."
)
@json_option
def health(db: str | None, overdue_after: float, live: bool, as_json: bool) -> None:
    """Check the deployment as /readyz does: the store answers, its schema is the
    one this Keel needs, at least one worker is alive, and no due run has waited
    more than --overdue-after seconds. Exits 1 when a check fails."""
    url = resolve_db(db)

    async def run() -> HealthReport:
        try:
            store = open_existing(url)
            await store.open()  # never creates a database (see open_existing)
        except CliError as exc:  # no database file there
            return unreachable(exc.message)
        except Exception as exc:  # unreachable, missing, not Keel's: a failed check
            return unreachable(exc)
        try:
            if live:
                return await liveness(store)
            return await check(store, overdue_after=overdue_after)
        finally:
            await store.close()

    report = asyncio.run(run())
    well = report.live if live else report.ready
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        width = max(len(c.name) for c in report.checks)
        for c in report.checks:
            click.echo(f"{c.name:<{width}}  {'ok  ' if c.ok else 'FAIL'}  {c.detail}")
        click.echo("healthy" if well else ("not live" if live else "not ready"))
    if not well:
        raise click.exceptions.Exit(1)
