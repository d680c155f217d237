"""Queues, schedules and workers: what runs the runs, and the switches on it."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keel.core.states import RunState
from keel.errors import KeelError
from keel.store.base import WorkerVersion
from keel.ui.context import Dashboard, back, dashboard
from keel.ui.run import forbidden

#: Leased runs read for the workers page (their owners' lease counts).
LEASE_SAMPLE = 1000


async def queues_page(request: Request) -> Response:
    d = dashboard(request)
    return d.page(request, "queues.html", queues=await d.client.queues(), nav="queues")


async def schedules_page(request: Request) -> Response:
    d = dashboard(request)
    found = await d.client.list_schedules()
    return d.page(request, "schedules.html", schedules=found, nav="schedules")


@dataclass
class WorkerRow:
    """One worker: where it runs, what it runs, what it holds."""

    worker: str
    host: str
    pid: int
    first_seen: float
    last_seen: float
    live_until: float
    versions: list[str] = field(default_factory=list)
    leases: int = 0


async def workers_page(request: Request) -> Response:
    d = dashboard(request)
    pairs = await d.store.workers.list_versions(live=True)
    rows = _workers(pairs)
    held = await d.store.reads.list_runs(state=RunState.RUNNING, limit=LEASE_SAMPLE)
    now = await d.store.now()
    leases = Counter(
        r.lease_owner
        for r in held.runs
        if r.lease_owner and r.lease_expires_at is not None and r.lease_expires_at >= now
    )
    for row in rows:
        row.leases = leases.pop(row.worker, 0)
    unregistered = sorted(leases.items())  # holders that registered no versions (or expired)
    return d.page(
        request,
        "workers.html",
        workers=rows,
        unregistered=unregistered,
        leases_cut=held.next_cursor is not None,
        lease_sample=LEASE_SAMPLE,
        held=held.runs,
        now=now,
        nav="workers",
    )


def _workers(pairs: list[WorkerVersion]) -> list[WorkerRow]:
    by_worker: dict[str, WorkerRow] = {}
    versions: dict[str, list[str]] = defaultdict(list)
    for p in pairs:
        row = by_worker.setdefault(
            p.worker, WorkerRow(p.worker, p.host, p.pid, p.first_seen, p.last_seen, p.live_until)
        )
        row.first_seen = min(row.first_seen, p.first_seen)
        row.last_seen = max(row.last_seen, p.last_seen)
        row.live_until = max(row.live_until, p.live_until)
        versions[p.worker].append(f"{p.workflow}@{p.version[:12]}")
    for worker, names in versions.items():
        by_worker[worker].versions = sorted(names)
    return sorted(by_worker.values(), key=lambda r: r.worker)


async def schedule_action(request: Request) -> Response:
    d = dashboard(request)
    if not await _allowed(d, request):
        return forbidden(d, request)
    schedule_id, action = request.path_params["schedule_id"], request.path_params["action"]
    try:
        if action == "pause":
            await d.client.pause_schedule(schedule_id)
        elif action == "resume":
            await d.client.resume_schedule(schedule_id)
        else:
            return Response(f"unknown action {action!r}", status_code=404)
    except KeelError as exc:
        return back(request, "/schedules", problem=f"{action} {schedule_id}: {exc}")
    return back(request, "/schedules", done=f"schedule {schedule_id} {action}d")


async def queue_action(request: Request) -> Response:
    """Set or remove a queue's cluster-wide limit."""
    d = dashboard(request)
    if not await _allowed(d, request):
        return forbidden(d, request)
    queue = request.path_params["queue"]
    form = await request.form()
    text = str(form.get("limit", "")).strip()
    try:
        limit = int(text) if text else None
    except ValueError:
        return back(request, "/queues", problem=f"limit of {queue}: {text!r} is not a number")
    try:
        await d.client.set_queue_limit(queue, limit)
    except (KeelError, ValueError) as exc:
        return back(request, "/queues", problem=f"limit of {queue}: {exc}")
    said = f"at most {limit} at once" if limit is not None else "no limit"
    return back(request, "/queues", done=f"queue {queue}: {said}")


async def _allowed(d: Dashboard, request: Request) -> bool:
    form = await request.form()
    csrf = form.get("csrf")
    return d.access.may_act(request, csrf if isinstance(csrf, str) else None)


ROUTES = [
    Route("/queues", queues_page, name="queues"),
    Route("/schedules", schedules_page, name="schedules"),
    Route("/workers", workers_page, name="workers"),
    Route("/schedule-action/{action}/{schedule_id:path}", schedule_action, methods=["POST"]),
    Route("/queue-limit/{queue:path}", queue_action, methods=["POST"]),
]
