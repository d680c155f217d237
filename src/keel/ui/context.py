"""What every page handler shares: the store, a client for actions, the access
checks and the templates (kept on ``app.state.dashboard``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from keel.client import Client
from keel.core.redact import redact
from keel.store.ports import Store
from keel.ui.access import CSRF_FIELD, Access
from keel.ui.format import install


@dataclass
class Dashboard:
    """The dashboard's state, one per app."""

    store: Store
    client: Client
    access: Access
    owns_store: bool  # opened from a URL by the app: closed with it
    env: jinja2.Environment = field(init=False)
    closing: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("keel.ui", "templates"),
            autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        install(self.env)

    def page(
        self, request: Request, name: str, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        """Render template ``name`` with the context every page has."""
        return HTMLResponse(self.fragment(request, name, **context), status_code=status_code)

    def fragment(self, request: Request, name: str, **context: Any) -> str:
        """Template ``name`` rendered to a string (pages and pieces pushed over SSE)."""
        operator = self.access.is_operator(request)
        common = {
            "request": request,
            "root": request.scope.get("root_path", ""),
            "store_url": redact(self.store.url),
            "token_configured": self.access.configured,
            "operator": operator,
            "csrf_field": CSRF_FIELD,
            "csrf": self.access.csrf() if operator else "",
            "message": request.query_params.get("done", ""),
            "problem": request.query_params.get("problem", ""),
        }
        return self.env.get_template(name).render(common | context)


def dashboard(request: Request) -> Dashboard:
    """The :class:`Dashboard` of the app serving ``request``."""
    found: Dashboard = request.app.state.dashboard
    return found


def back(request: Request, path: str, *, done: str = "", problem: str = "") -> Response:
    """Redirect (303, so the browser GETs) to ``path`` under the app's mount point,
    with a note of what happened."""
    note = {"done": done} if done else {"problem": redact(problem)} if problem else {}
    target = request.scope.get("root_path", "") + path
    if note:
        target += ("&" if "?" in target else "?") + urlencode(note)
    return RedirectResponse(target, status_code=303)
