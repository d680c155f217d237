"""``keel graph show``, ``keel approve``, ``keel reject``: graph runs from the
command line. The journal says what happened; the graph says what each node
is: the spec stored under the run's version, or the graph the ``--app``
modules build (needed only for runs started before Keel stored specs)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click
from rich.table import Table

from keel.cli import render
from keel.cli.common import db_option, import_apps, json_option, resolve_db, with_client
from keel.client import Client
from keel.graph.draw import dot, mermaid
from keel.graph.status import NodeStatus

F = Callable[..., Any]


def app_option(fn: F) -> F:
    return click.option(
        "--app",
        "apps",
        multiple=True,
        metavar="MODULE",
        help="Module that builds the run's graph (repeatable; by default the graph's "
        "stored spec is used).",
    )(fn)


@click.group("graph")
def graph() -> None:
    """Look at graph runs node by node."""


@graph.command("show")
@click.argument("run_id")
@app_option
@click.option("--mermaid", "as_mermaid", is_flag=True, help="A Mermaid flowchart with statuses.")
@click.option("--dot", "as_dot", is_flag=True, help="A Graphviz digraph with statuses.")
@db_option
@json_option
def show(
    run_id: str,
    apps: tuple[str, ...],
    as_mermaid: bool,
    as_dot: bool,
    db: str | None,
    as_json: bool,
) -> None:
    """Each node of graph run RUN_ID: status, label, items, attempts, output
    (--json: also each node's input)."""
    import_apps(apps)

    async def fetch(client: Client) -> tuple[Any, dict[str, NodeStatus]]:
        built = await client.graph(run_id)  # loaded and checked once, for both
        return built, await client.nodes(run_id, graph=built)

    built, nodes = with_client(resolve_db(db), fetch)
    labels = {name: s.shown for name, s in nodes.items()}
    if as_mermaid:
        click.echo(mermaid(built, labels), nl=False)
    elif as_dot:
        click.echo(dot(built, labels), nl=False)
    elif as_json:
        render.print_json([_as_dict(s) for s in nodes.values()])
    else:
        table = Table(box=None, header_style="bold", pad_edge=False)
        for column in ("NODE", "KIND", "STATUS", "ITEMS", "ATTEMPTS", "OUTPUT"):
            table.add_column(column)
        for s in nodes.values():
            items = f"{s.items[0]}/{s.items[1]}" if s.items else ""
            table.add_row(s.node, s.kind, s.shown, items, str(s.attempts or ""), _output(s))
        render.make_console().print(table)


def _output(status: NodeStatus) -> str:
    if status.error:
        return f"{status.error.get('type', '')}: {status.error.get('message', '')}"[:80]
    if status.output is None:
        return ""
    text = json.dumps(status.output, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= 80 else text[:77] + "..."


def _as_dict(status: NodeStatus) -> dict[str, Any]:
    return {
        "node": status.node,
        "kind": status.kind,
        "status": status.status,
        "label": status.label,
        "cached": status.cached,
        "output": status.output,
        "error": status.error,
        "attempts": status.attempts,
        "items": list(status.items) if status.items else None,
        "started_at": status.started_at,
        "ended_at": status.ended_at,
        "ended_seq": status.ended_seq,
        "commands": list(status.commands),
        "input": status.input,
        "input_size": status.input_size,
    }


def decision_options(fn: F) -> F:
    fn = db_option(app_option(fn))
    fn = click.option("--comment", default=None, help="Why (recorded).")(fn)
    fn = click.option("--actor", required=True, help="Who decides (recorded).")(fn)
    return click.argument("run_id")(click.argument("node")(fn))


@click.command("approve")
@decision_options
def approve(
    run_id: str, node: str, actor: str, comment: str | None, apps: tuple[str, ...], db: str | None
) -> None:
    """Approve approval node NODE of graph run RUN_ID: the run follows its
    ``approved`` edges. Sent before the run reaches the node, it waits there; a
    second decision on a node changes nothing."""
    _decide("approved", run_id, node, actor, comment, apps, db)


@click.command("reject")
@decision_options
def reject(
    run_id: str, node: str, actor: str, comment: str | None, apps: tuple[str, ...], db: str | None
) -> None:
    """Reject approval node NODE of graph run RUN_ID: the run follows its
    ``rejected`` edges (see ``keel approve``)."""
    _decide("rejected", run_id, node, actor, comment, apps, db)


def _decide(
    decision: str,
    run_id: str,
    node: str,
    actor: str,
    comment: str | None,
    apps: tuple[str, ...],
    db: str | None,
) -> None:
    import_apps(apps)

    async def send(client: Client) -> bool:
        if decision == "approved":
            return await client.approve(run_id, node, actor=actor, comment=comment)
        return await client.reject(run_id, node, actor=actor, comment=comment)

    if with_client(resolve_db(db), send):
        click.echo(f"{node} of run {run_id} {decision} by {actor}")
    else:
        click.echo(f"{node} of run {run_id} was decided before: nothing changed")
