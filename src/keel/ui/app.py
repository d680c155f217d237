"""The dashboard's ASGI app: :func:`create_app` over a store or a database URL."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from keel.client import Client
from keel.observe import health, metrics
from keel.store import open_store
from keel.store.ports import Store
from keel.ui.access import COOKIE, Access
from keel.ui.context import Dashboard, dashboard
from keel.ui.run import ROUTES as RUN_ROUTES
from keel.ui.runs import ROUTES as RUNS_ROUTES
from keel.ui.system import ROUTES as SYSTEM_ROUTES


def create_app(
    store: Store | str, *, token: str | None = None, close_store: bool | None = None
) -> Starlette:
    """The dashboard over ``store`` (a :class:`~keel.store.ports.Store`, or a
    database URL the app opens on startup and closes on shutdown).

    Read-only unless ``token`` is given: then an operator who logs in with it
    (or sends ``Authorization: Bearer <token>``) may cancel, signal, pause and
    resume from the pages. Mount it anywhere (``Mount("/keel", create_app(...))``);
    its links follow the mount point. ``close_store``: close the store when the
    app shuts down (default: only a store the app opened from a URL).
    """
    owns = isinstance(store, str) if close_store is None else close_store
    opened = open_store(store) if isinstance(store, str) else store
    state = Dashboard(opened, Client(opened), Access(token), owns_store=owns)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await state.client.open()
        try:
            yield
        finally:
            state.closing.set()  # ends the event streams
            if owns:
                await opened.close()

    routes = [
        *RUNS_ROUTES,
        *RUN_ROUTES,
        *SYSTEM_ROUTES,
        Route("/metrics", metrics_endpoint, name="metrics"),
        Route("/healthz", healthz, name="healthz"),
        Route("/readyz", readyz, name="readyz"),
        Route("/login", login, methods=["GET", "POST"], name="login"),
        Route("/logout", logout, methods=["POST"], name="logout"),
        Mount("/static", StaticFiles(packages=[("keel.ui", "static")]), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.dashboard = state
    return app


async def login(request: Request) -> Response:
    """A form taking the operator token; sets the session cookie."""
    d = dashboard(request)
    root = request.scope.get("root_path", "")
    if request.method == "GET":
        return d.page(request, "login.html", failed=False)
    form = await request.form()
    given = form.get("token")
    if not isinstance(given, str) or not d.access.token_matches(given):
        # Nothing about the attempt is logged or echoed back.
        return d.page(request, "login.html", failed=True, status_code=403)
    response = RedirectResponse(root + "/", status_code=303)
    response.set_cookie(
        COOKIE,
        d.access.session(),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path=root or "/",
    )
    return response


async def logout(request: Request) -> Response:
    root = request.scope.get("root_path", "")
    response = RedirectResponse(root + "/", status_code=303)
    response.delete_cookie(COOKIE, path=root or "/")
    return response


async def metrics_endpoint(request: Request) -> Response:
    """Prometheus exposition: this process's metrics (if it installed a Prometheus
    reader) and the gauges read from the database now (as ``keel worker
    --metrics-port`` serves them)."""
    d = dashboard(request)
    body = metrics.process_metrics() + await metrics.store_gauges(d.store)
    return Response(body, headers={"Content-Type": metrics.CONTENT_TYPE})


async def healthz(request: Request) -> Response:
    """Liveness: the store answers (200), else 503."""
    report = await health.liveness(dashboard(request).store)
    return JSONResponse(report.to_dict(), status_code=200 if report.live else 503)


async def readyz(request: Request) -> Response:
    """Readiness: store reachable, schema current, workers alive, no overdue runs."""
    report = await health.check(dashboard(request).store)
    return JSONResponse(report.to_dict(), status_code=200 if report.ready else 503)


def new_token() -> str:
    """A random operator token (``keel ui --token generate``)."""
    return secrets.token_urlsafe(24)
