"""Keel's log records as structured data.

The worker's records about a run carry its identity as ``extra`` fields:
``run_id``, ``workflow``, and for a step attempt ``step`` and ``attempt``
(see :func:`run_fields`). Any formatter can use them (``%(run_id)s``);
:class:`JsonFormatter` (``keel worker --log-format json``) writes each record
as one JSON object per line, with passwords masked.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import msgspec

from keel.core.redact import redact

__all__ = ["FIELDS", "JsonFormatter", "run_fields"]

#: The structured fields a record about a run may carry.
FIELDS = ("run_id", "workflow", "step", "attempt", "task_id", "queue")

_encoder = msgspec.json.Encoder()


def run_fields(
    run_id: str, workflow: str, step: str | None = None, attempt: int | None = None
) -> dict[str, Any]:
    """The ``extra=`` of a record about run ``run_id`` (and a step attempt of it)."""
    fields: dict[str, Any] = {"run_id": run_id, "workflow": workflow}
    if step is not None:
        fields["step"] = step
    if attempt is not None:
        fields["attempt"] = attempt
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (UTC, ISO 8601), ``level``,
    ``logger``, ``message``, the fields of :data:`FIELDS` the record carries,
    and ``exception`` (the traceback) when there is one. Message and traceback
    pass through :func:`keel.core.redact.redact`: a database password never
    reaches the log."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC)
        out: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                out[name] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            out["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            out["exception"] = redact(record.exc_text)
        if record.stack_info:
            out["stack"] = redact(self.formatStack(record.stack_info))
        return _encoder.encode(out).decode()
