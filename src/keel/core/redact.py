"""Passwords masked in what Keel prints, logs, raises and records.

Everything that shows a database URL, or a message that may hold one (a
driver's error: libpq quotes back a URI it cannot parse; a step's error that
names the URL it could not reach), goes through :func:`redact`.
It masks the password in ``scheme://user:password@host`` user info and in
``password=...`` query parameters or libpq keyword settings, wherever they
appear in the text.
"""

from __future__ import annotations

import re

MASK = "***"

# The password runs to the "@" that starts the host: the last "@" before the
# end of the URL's authority (a "/", "?", "#", blank or quote after it), so
# an unencoded "@" or "/" in the password is still masked whole.
_USERINFO = re.compile(
    r"""(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/?#@\s"']*:)"""
    r"""(?P<secret>[^\s"']*?)"""
    r"""(?=@[^@\s/?#"']*(?:[/?#\s"']|$))"""
)
_KEYWORD = re.compile(
    r"""(?P<head>\bpassword\s*=\s*)(?P<secret>'(?:[^'\\]|\\.)*'|[^\s&'"]+)""", re.IGNORECASE
)


def redact(text: str) -> str:
    """``text`` with the password of every URL or ``password=`` setting in it masked."""
    text = _USERINFO.sub(lambda m: m["head"] + MASK, text)
    return _KEYWORD.sub(lambda m: m["head"] + MASK, text)
