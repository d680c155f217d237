"""How values look on the pages: times, durations, JSON, errors (Jinja filters).

Everything shown that could hold a database URL (errors, values, the store's
URL) goes through :func:`keel.core.redact.redact` first.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import jinja2

from keel.core.redact import redact

MAX_VALUE = 20_000  # characters of a value shown before it is cut


def ts(epoch: float | None) -> str:
    """``2026-12-03 14:35:36.123`` (UTC), or an empty string."""
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def iso(epoch: float | None) -> str:
    """Machine-readable time for ``<time datetime=...>``."""
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def duration(seconds: float | None) -> str:
    """``850 ms``, ``12.5 s``, ``3 min 4 s``, ``2 h 5 min``, ``3 d 4 h``."""
    if seconds is None:
        return ""
    s = max(0.0, seconds)
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 60:
        return f"{s:.3g} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    if s < 86400:
        return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"
    return f"{int(s // 86400)} d {int(s % 86400 // 3600)} h"


def pretty(value: bytes | str | Any | None) -> str:
    """Encoded JSON (or a plain value) indented, redacted and cut at ``MAX_VALUE``."""
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            text = json.dumps(json.loads(bytes(value)), indent=2, ensure_ascii=False)
        except ValueError:
            text = bytes(value).decode("utf-8", "replace")
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    text = redact(text)
    if len(text) > MAX_VALUE:
        text = text[:MAX_VALUE] + f"\n… ({len(text) - MAX_VALUE} more characters)"
    return text


def short(value: bytes | None, limit: int = 80) -> str:
    """A value on one line, cut at ``limit`` characters."""
    if value is None:
        return ""
    try:
        text = json.dumps(json.loads(bytes(value)), ensure_ascii=False)
    except ValueError:
        text = bytes(value).decode("utf-8", "replace")
    text = redact(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_text(error: dict[str, Any] | bytes | None) -> str:
    """``Type: message`` of a journaled error, redacted."""
    if error is None:
        return ""
    if isinstance(error, bytes | bytearray):
        raw = bytes(error)
        try:
            error = json.loads(raw)
        except ValueError:
            return redact(raw.decode("utf-8", "replace"))
    if not isinstance(error, dict):
        return redact(str(error))
    return redact(f"{error.get('type', 'error')}: {error.get('message', '')}")


def traceback(error: dict[str, Any] | bytes | None) -> str:
    """A journaled error's traceback, redacted (empty when it has none)."""
    if isinstance(error, bytes | bytearray):
        try:
            error = json.loads(bytes(error))
        except ValueError:
            return ""
    if not isinstance(error, dict):
        return ""
    return redact(str(error.get("traceback") or ""))


def run_path(run_id: str) -> str:
    """The path of a run's page (a run id may hold ``/``: quoted whole)."""
    return "/run/" + quote(run_id, safe="")


def quoted(text: str) -> str:
    """``text`` as one path segment."""
    return quote(text, safe="")


def install(env: jinja2.Environment) -> None:
    """Register the filters and globals on ``env``."""
    env.globals.update(run_path=run_path)
    env.filters.update(
        ts=ts,
        iso=iso,
        duration=duration,
        pretty=pretty,
        short=short,
        error_text=error_text,
        traceback=traceback,
        redact=redact,
        quoted=quoted,
    )
