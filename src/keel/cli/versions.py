"""``keel versions list``: the workflow versions workers have registered."""

from __future__ import annotations

from datetime import UTC, datetime

import click
from rich.table import Table

from keel.cli import render
from keel.cli.common import db_option, json_option, resolve_db, with_client
from keel.client import Client
from keel.store.base import WorkerVersion


@click.group("versions")
def versions() -> None:
    """Inspect which workflow versions workers have (and so which runs can run)."""


@versions.command("list")
@click.option("--all", "show_all", is_flag=True, help="Also versions of workers not seen lately.")
@db_option
@json_option
def list_versions(show_all: bool, db: str | None, as_json: bool) -> None:
    """Workflow versions of live workers: one row per workflow, version and worker.

    A worker records its versions when it starts and refreshes them every
    heartbeat; they stay live for a lease TTL after its last refresh, and a
    worker that stops removes them.
    """

    async def fetch(client: Client) -> tuple[list[WorkerVersion], float]:
        return await client.versions(live=not show_all), await client.store.now()

    found, now = with_client(resolve_db(db), fetch)
    if as_json:
        render.print_json(found)
        return
    console = render.make_console()
    if not found:
        console.print("no live worker versions" if not show_all else "no worker versions")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("WORKFLOW", "VERSION", "WORKER", "HOST", "PID", "LAST SEEN"):
        table.add_column(column, justify="right" if column == "PID" else "left")
    if show_all:
        table.add_column("LIVE")
    for v in found:
        seen = render.time_text(datetime.fromtimestamp(v.last_seen, UTC))
        row = [v.workflow, v.version, v.worker, v.host, str(v.pid), seen]
        if show_all:
            row.append("yes" if v.live_until >= now else "no")
        table.add_row(*row)
    console.print(table)
