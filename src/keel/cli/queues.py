"""``keel queues list|limit``: dispatched-step queues and their cluster-wide limits."""

from __future__ import annotations

import click
from rich.table import Table

from keel.cli import render
from keel.cli.common import CliUsageError, db_option, json_option, resolve_db, with_client
from keel.client import Client
from keel.errors import ConfigurationError
from keel.store.base import QueueInfo

MAX_LIMIT = 2**31 - 1  # what every backend's column holds


@click.group("queues")
def queues() -> None:
    """Inspect dispatched-step queues and set their cluster-wide limits."""


@queues.command("list")
@db_option
@json_option
def list_queues(db: str | None, as_json: bool) -> None:
    """Queues with a limit or with steps waiting or running."""

    async def fetch(client: Client) -> list[QueueInfo]:
        return await client.queues()

    found = with_client(resolve_db(db), fetch)
    if as_json:
        render.print_json(found)
        return
    console = render.make_console()
    if not found:
        console.print("no queues")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("QUEUE", "LIMIT", "WAITING", "RUNNING"):
        table.add_column(column, justify="left" if column == "QUEUE" else "right")
    for q in found:
        limit = "-" if q.concurrency is None else str(q.concurrency)
        table.add_row(q.queue, limit, str(q.available), str(q.leased))
    console.print(table)


@queues.command("limit")
@click.argument("queue")
@click.argument("limit", metavar="LIMIT|none")
@db_option
def limit_queue(queue: str, limit: str, db: str | None) -> None:
    """Run at most LIMIT steps of QUEUE at once over all workers (`none` removes it,
    0 pauses the queue).

    The limit is stored in the database: it holds for every worker on it,
    including workers started later. Running steps are not stopped when it
    is lowered.
    """
    concurrency: int | None = None
    if limit.lower() != "none":
        digits = limit.isascii() and limit.isdigit() and len(limit) <= 10
        if not digits or not 0 <= int(limit) <= MAX_LIMIT:
            raise CliUsageError(
                f"LIMIT must be an integer from 0 (paused) to {MAX_LIMIT} or 'none', not {limit!r}"
            )
        concurrency = int(limit)

    async def apply(client: Client) -> None:
        try:
            await client.set_queue_limit(queue, concurrency)
        except ConfigurationError as exc:
            raise CliUsageError(str(exc)) from None

    with_client(resolve_db(db), apply, existing=False)
    if concurrency is None:
        click.echo(f"queue {queue}: no limit")
    elif concurrency == 0:
        click.echo(f"queue {queue}: paused (no new step starts until the limit is raised)")
    else:
        click.echo(f"queue {queue}: at most {concurrency} at once over all workers")
