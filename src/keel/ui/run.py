"""A run's page: its row, input, result and error, a graph run's nodes, the step
timeline, the journal (downloadable as ``keel runs export`` writes it) and time
travel over it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keel.core import events as ev
from keel.core.fold import RunView, fold, views
from keel.core.journal import journal_filename, journal_text
from keel.core.redact import redact
from keel.errors import KeelError, StoreError
from keel.graph.draw import mermaid
from keel.graph.status import NodeStatus, node_statuses
from keel.graph.stored import graph_of_run
from keel.store.base import EventRecord, RunRecord
from keel.ui.context import Dashboard, back, dashboard
from keel.ui.format import error_text, run_path, short
from keel.ui.timeline import build


async def run_page(request: Request) -> Response:
    d = dashboard(request)
    run_id = request.path_params["run_id"]
    run = await d.store.reads.get_run(run_id)
    if run is None:
        return d.page(request, "missing.html", run_id=run_id, status_code=404)
    history = await d.store.reads.history(run_id)
    steps = _views(history)
    now = await d.store.now()
    last = steps[-1] if steps else None
    line = build(last, run.created_at, now, ended=run.state.is_terminal) if last else None
    child_ids = [c.child_run_id for c in last.of_kind("child") if c.child_run_id] if last else []
    children = await d.store.reads.get_runs(child_ids) if child_ids else {}
    failed_only = request.query_params.get("failed") == "1"
    lanes = [] if line is None else [lane for lane in line.lanes if lane.failed or not failed_only]
    return d.page(
        request,
        "run.html",
        run=run,
        view=last,
        line=line,
        lanes=lanes,
        failed_only=failed_only,
        children=children,
        waiting=await d.client.waiting(run),
        forks=(await d.client.get(run_id)).forks,
        graph=await _graph(d, run),
        events=len(history),
        quoted=quote(run_id, safe=""),
    )


@dataclass(frozen=True)
class NodeRow:
    """One node of a graph run as the page shows it."""

    node: str
    kind: str
    status: str  # the node's status (css class)
    state: str  # the status with a route's or approval's label
    items: str  # a map's "ended/all"
    attempts: int
    value: str  # its output on one line, or its error


@dataclass(frozen=True)
class GraphSection:
    """A graph run's nodes for the page: their statuses and the Mermaid text
    (statuses drawn in), or why they cannot be shown."""

    nodes: list[NodeRow]
    mermaid: str = ""
    problem: str = ""


def _row(s: NodeStatus) -> NodeRow:
    state = s.shown
    if s.error:
        value = error_text(s.error)
    elif s.output is None:
        value = ""
    else:
        value = short(json.dumps(s.output, ensure_ascii=False, default=str).encode())
    items = f"{s.items[0]}/{s.items[1]}" if s.items else ""
    return NodeRow(s.node, s.kind, s.status, state, items, s.attempts, value)


async def _graph(d: Dashboard, run: RunRecord) -> GraphSection | None:
    """The section of a graph run, from the imported graph or its stored spec;
    ``None`` for any other run."""
    try:
        graph = await graph_of_run(d.store.specs, d.client.registry, run.workflow, run.version)
    except StoreError as exc:  # a damaged or foreign spec row: say so, draw nothing
        return GraphSection([], problem=str(exc))
    if graph is None:
        return None  # a code workflow, or a graph run from before specs were stored
    try:
        nodes = node_statuses(graph, run.run_id, await d.client.history(run.run_id))
    except ValueError:  # an event this code cannot read
        return GraphSection([], problem="the journal could not be read")
    rows = [_row(s) for s in nodes.values()]
    return GraphSection(rows, mermaid(graph, {r.node: r.state for r in rows}))


def _views(history: list[EventRecord]) -> list[RunView]:
    try:
        return list(views(history))
    except ValueError:  # an event this code cannot read: show the rest of the page
        return []


async def time_travel(request: Request) -> Response:
    """The run as it stood after one journal event (an htmx fragment)."""
    d = dashboard(request)
    run_id = request.path_params["run_id"]
    history = await d.store.reads.history(run_id)
    if not history:
        return Response("no such run", status_code=404)
    try:
        seq = int(request.query_params.get("seq", len(history) - 1))
    except ValueError:
        return Response("seq must be a number", status_code=400)
    seq = min(max(seq, 0), len(history) - 1)
    view = fold(history[: seq + 1])
    assert view is not None
    row = history[seq]
    return d.page(
        request,
        "_travel.html",
        view=view,
        row=row,
        data=ev.plain(row.type, row.data),
        last=len(history) - 1,
    )


async def journal(request: Request) -> Response:
    """The journal as ``keel runs export`` writes it (``keel replay`` reads it)."""
    d = dashboard(request)
    run_id = request.path_params["run_id"]
    history = await d.store.reads.history(run_id)
    if not history:
        return Response("no such run", status_code=404)
    name = journal_filename(run_id)
    return Response(
        journal_text(history),
        media_type="application/json",
        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}"},
    )


async def run_action(request: Request) -> Response:
    """An operator action on a run, from a form on its page."""
    d = dashboard(request)
    run_id = request.path_params["run_id"]
    action = request.path_params["action"]
    form = await request.form()
    csrf = form.get("csrf")
    if not d.access.may_act(request, csrf if isinstance(csrf, str) else None):
        return forbidden(d, request)
    where = run_path(run_id)
    try:
        done = await _act(d, run_id, action, {k: v for k, v in form.items() if isinstance(v, str)})
    except (KeelError, ValueError) as exc:
        return back(request, where, problem=f"{action}: {exc}")
    if done is None:
        return Response(f"unknown action {action!r}", status_code=404)
    if done.startswith("NEW:"):  # retry and fork: go to the new run
        new = done.removeprefix("NEW:")
        return back(request, run_path(new), done=f"{action} of {run_id}: this run")
    return back(request, where, done=done)


async def _act(d: Dashboard, run_id: str, action: str, form: dict[str, str]) -> str | None:
    """Perform ``action``; what happened, in words (``None``: no such action)."""
    if action == "cancel":
        state = await d.client.cancel(run_id)
        return f"cancel requested (state: {state.value})"
    if action == "terminate":
        info = await d.client.terminate(run_id, reason=form.get("reason", "").strip())
        return f"terminated (state: {info.state.value})"
    if action == "resume":
        info = await d.client.resume(run_id, force=form.get("force") == "1")
        return f"resumed (state: {info.state.value})"
    if action in ("retry", "fork"):
        redeliver = form.get("redeliver", "1") == "1"
        if action == "retry":
            handle = await d.client.retry(run_id, redeliver_signals=redeliver)
        else:
            at = form.get("at", "").strip()
            handle = await d.client.fork(run_id, at, redeliver_signals=redeliver)
        return f"NEW:{handle.run_id}"
    if action == "signal":
        name = form.get("name", "").strip()
        text = form.get("payload", "").strip() or "null"
        try:
            payload: Any = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"the payload is not JSON: {exc}") from None
        delivered = await d.client.signal(run_id, name, payload)
        return f"signal {name!r} sent" if delivered else f"signal {name!r} was a repeat"
    return None


def forbidden(d: Dashboard, request: Request) -> Response:
    """The answer to an action without the operator token (or a bad CSRF value)."""
    why = (
        "This dashboard is read-only: no operator token is configured."
        if not d.access.configured
        else "This action needs the operator token: log in first."
    )
    return d.page(request, "forbidden.html", why=redact(why), status_code=403)


ROUTES = [
    Route("/run/{run_id:path}", run_page, name="run"),
    Route("/run-at/{run_id:path}", time_travel, name="run_at"),
    Route("/run-journal/{run_id:path}", journal, name="run_journal"),
    Route("/run-action/{action}/{run_id:path}", run_action, methods=["POST"]),
]
