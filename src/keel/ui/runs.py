"""The runs page: filters in the URL, keyset pages, counts per state, and live
updates over server-sent events woken by the store's change feed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from keel.core.states import RunState
from keel.errors import ConfigurationError, KeelError
from keel.store.base import RunRecord
from keel.ui.context import Dashboard, back, dashboard
from keel.ui.query import PAGE_SIZES, BadFilter, RunQuery, Where
from keel.ui.run import forbidden

#: Seconds between keep-alive comments on an idle stream, and the least time
#: between two pushes (a busy store changes many times a second).
KEEPALIVE = 15.0
MIN_PUSH_INTERVAL = 0.5
#: Counting a large table takes a while (about 0.4 s per million runs on
#: SQLite): a stream recounts at most every COUNT_EVERY seconds, and never
#: spends more than a tenth of its time counting.
COUNT_EVERY = 2.0


@dataclass(frozen=True, slots=True)
class Listing:
    """One page of the runs list as shown."""

    runs: list[RunRecord]
    next_cursor: str | None
    counts: dict[RunState, int]
    total: int
    error: str = ""


async def listing(d: Dashboard, q: RunQuery, *, counts: bool = True) -> Listing:
    """The runs (and counts per state under the same filters but the state) ``q`` selects."""
    try:
        now = await d.store.now()
        where = q.where(now)
        if q.run_id:
            run = await d.store.reads.get_run(q.run_id)
            runs = [run] if run is not None else []
            one = {run.state: 1} if run is not None else {}
            return Listing(runs, None, one, len(runs))
        page = await d.store.reads.list_runs(
            limit=q.limit,
            cursor=q.cursor or None,
            oldest_first=q.oldest_first,
            sort=q.sort,
            **where,
        )
        by_state: dict[RunState, int] = {}
        if counts:
            by_state = await count(d, q, where)
        total = sum(n for s, n in by_state.items() if not q.states or s in q.states)
        return Listing(page.runs, page.next_cursor, by_state, total)
    except (BadFilter, ConfigurationError) as exc:
        return Listing([], None, {}, 0, str(exc))


async def count(d: Dashboard, q: RunQuery, where: Where) -> dict[RunState, int]:
    """Runs per state under ``q``'s filters but its states (so each count links to a filter)."""
    if q.run_id:
        run = await d.store.reads.get_run(q.run_id)
        return {run.state: 1} if run is not None else {}
    return await d.store.reads.count_runs_by_state(**(where | {"state": None}))


async def runs_page(request: Request) -> Response:
    d = dashboard(request)
    try:
        q = RunQuery.parse(request.query_params)
    except BadFilter as exc:
        q = RunQuery()
        found = Listing([], None, {}, 0, str(exc))
    else:
        # The counts come with their own request (runs_counts): counting a big
        # table takes longer than the page should.
        found = await listing(d, q, counts=False)
    return d.page(
        request,
        "runs.html",
        q=q,
        listing=found,
        states=list(RunState),
        page_sizes=PAGE_SIZES,
        status_code=400 if found.error else 200,
    )


async def runs_counts(request: Request) -> Response:
    """The counts per state of the runs page's filters (an htmx fragment)."""
    d = dashboard(request)
    try:
        q = RunQuery.parse(request.query_params)
        found = await counted(d, q)
    except (BadFilter, ConfigurationError) as exc:
        return Response(str(exc), status_code=400)
    return d.page(request, "_counts.html", q=q, listing=found, states=list(RunState))


async def counted(d: Dashboard, q: RunQuery) -> Listing:
    """A listing with only the counts filled in."""
    by_state = await count(d, q, q.where(await d.store.now()))
    return Listing([], None, by_state, sum(by_state.values()))


async def runs_stream(request: Request) -> Response:
    """Server-sent events: the rows and the counts of the first page of this query,
    pushed whenever they change."""
    d = dashboard(request)
    try:
        q = RunQuery.parse(request.query_params)
    except BadFilter as exc:
        return Response(str(exc), status_code=400)

    async def events() -> AsyncIterator[str]:
        sent: dict[str, str] = {}
        loop = asyncio.get_running_loop()
        next_count = 0.0  # loop time from which a recount may run
        stale = True  # something changed since the counts were taken
        while not d.closing.is_set():
            found = await listing(d, q, counts=False)
            pieces = [("rows", "_rows.html", found)]
            if stale and loop.time() >= next_count:
                start = loop.time()
                counts = await counted(d, q)
                next_count = loop.time() + max(COUNT_EVERY, 10 * (loop.time() - start))
                stale = False
                pieces.append(("counts", "_counts.html", counts))
            for name, template, what in pieces:
                html = d.fragment(request, template, q=q, listing=what, states=list(RunState))
                if sent.get(name) != html:
                    sent[name] = html
                    yield _event(name, html)
            # Stale counts are due at next_count: wake then even if nothing else changes.
            timeout = max(0.05, next_count - loop.time()) if stale else KEEPALIVE
            if await _wait(d, timeout):
                stale = True
                await asyncio.sleep(MIN_PUSH_INTERVAL)
            elif not stale:
                yield ": keep-alive\n\n"

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


async def _wait(d: Dashboard, timeout: float) -> bool:
    """Wait for a change (``True``), the app closing, or ``timeout`` (``False``)."""
    change = asyncio.ensure_future(_changed(d, timeout))
    closing = asyncio.ensure_future(d.closing.wait())
    try:
        await asyncio.wait({change, closing}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (change, closing):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return change.done() and not change.cancelled() and change.result()


async def _changed(d: Dashboard, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    start = loop.time()
    await d.store.changes.wait(timeout)
    return loop.time() - start < timeout - 0.01


def _event(name: str, html: str) -> str:
    data = "".join(f"data: {line}\n" for line in html.splitlines() or [""])
    return f"event: {name}\n{data}\n"


BULK_ACTIONS = ("cancel", "terminate", "resume", "retry")


async def bulk_confirm(request: Request) -> Response:
    """How many runs an action on every run matching the filters would touch, and a
    button to go ahead (the count comes first)."""
    d = dashboard(request)
    action = request.query_params.get("action", "")
    if action not in BULK_ACTIONS:
        return Response(f"unknown bulk action {action!r}", status_code=400)
    try:
        q = RunQuery.parse(request.query_params)
        where = q.where(await d.store.now())
        n = 1 if q.run_id else await d.store.reads.count_runs(**where)
    except (BadFilter, ConfigurationError) as exc:
        return Response(str(exc), status_code=400)
    return d.page(request, "bulk.html", q=q, action=action, count=n)


async def bulk_apply(request: Request) -> Response:
    """Apply an action to the selected runs, or to every run matching the filters."""
    d = dashboard(request)
    form = await request.form()
    csrf = form.get("csrf")
    if not d.access.may_act(request, csrf if isinstance(csrf, str) else None):
        return forbidden(d, request)
    action = str(form.get("action", ""))
    if action not in BULK_ACTIONS:
        return Response(f"unknown bulk action {action!r}", status_code=400)
    selected = [v for v in form.getlist("run_id") if isinstance(v, str) and v]
    try:
        q = RunQuery.parse(QueryParams(str(form.get("filters", ""))))
        if selected:
            result = await d.client.bulk(action, selected)  # type: ignore[arg-type]
        elif q.run_id:
            result = await d.client.bulk(action, [q.run_id])  # type: ignore[arg-type]
        else:
            where = q.where(await d.store.now())
            result = await d.client.bulk(
                action,  # type: ignore[arg-type]
                workflow=where["workflow"],
                state=where["state"],
                since=where["since"],
                until=where["until"],
                parent_run_id=where["parent_run_id"],
            )
    except (BadFilter, KeelError) as exc:
        return back(request, "/?" + q.params(cursor=""), problem=f"{action}: {exc}")
    said = f"{action}: {result.done} runs"
    if result.refused:
        first = "; ".join(f"{r}: {why}" for r, why in result.refusals[:3])
        said += f", {result.refused} refused ({first})"
    return back(request, "/?" + q.params(cursor=""), done=said)


ROUTES = [
    Route("/", runs_page, name="runs"),
    Route("/runs", runs_page),
    Route("/runs/stream", runs_stream, name="runs_stream"),
    Route("/runs/counts", runs_counts, name="runs_counts"),
    Route("/runs-bulk", bulk_confirm, name="runs_bulk"),
    Route("/runs-bulk", bulk_apply, methods=["POST"]),
]
