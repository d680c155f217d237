"""Who may act: read-only unless an operator token is configured.

With a token, an action (any POST but the login) needs either the header
``Authorization: Bearer <token>`` (for scripts; no cookie, so no CSRF risk) or
the session cookie the login form sets *and* the form's CSRF field. The cookie
and the CSRF value are HMACs keyed by the token, never the token itself, so
neither reveals it; changing the token logs every session out.
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.requests import Request

COOKIE = "keel_ui_session"
CSRF_FIELD = "csrf"


class Access:
    """The operator token's checks (``token=None``: the dashboard is read-only)."""

    def __init__(self, token: str | None) -> None:
        if token is not None and not token.strip():
            raise ValueError("the operator token must not be empty")
        self._token = token
        self._key = hashlib.sha256(b"keel-ui\0" + token.encode()).digest() if token else b""

    @property
    def configured(self) -> bool:
        """Whether actions are possible at all."""
        return self._token is not None

    def _mac(self, what: str) -> str:
        return hmac.new(self._key, what.encode(), hashlib.sha256).hexdigest()

    def token_matches(self, given: str) -> bool:
        """Whether ``given`` is the operator token (compared in constant time)."""
        if self._token is None:
            return False
        return hmac.compare_digest(given.encode(), self._token.encode())

    def session(self) -> str:
        """The session cookie's value after a successful login."""
        return self._mac("session")

    def csrf(self) -> str:
        """The CSRF value every action form carries."""
        return self._mac("csrf")

    def is_operator(self, request: Request) -> bool:
        """Whether ``request`` comes from a logged-in operator (cookie or bearer header)."""
        if self._token is None:
            return False
        if self._bearer(request):
            return True
        cookie = request.cookies.get(COOKIE, "")
        return hmac.compare_digest(cookie.encode(), self.session().encode())

    def _bearer(self, request: Request) -> bool:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self.token_matches(given.strip())

    def may_act(self, request: Request, form_csrf: str | None) -> bool:
        """Whether the action in ``request`` is allowed: a bearer header, or the
        session cookie with the matching CSRF field."""
        if self._token is None:
            return False
        if self._bearer(request):
            return True
        given = (form_csrf or "").encode()
        return self.is_operator(request) and hmac.compare_digest(given, self.csrf().encode())
