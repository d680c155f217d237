"""Checking a run's input against its workflow's annotations before the run exists.

The worker decodes a run's input into the annotated types before it calls the
workflow; a value that does not fit would fail the run there, long after the
caller has gone. :func:`check_input` decodes the encoded arguments exactly as
the worker will, at ``start``, and names the culprit parameter when it fails.
"""

from __future__ import annotations

import inspect
from typing import Any

from keel.core import codec
from keel.errors import InvalidInputError, SerializationError

_P = inspect.Parameter


def check_input(fc: codec.FunctionCodec, data: bytes, workflow: str) -> None:
    """Raise :class:`InvalidInputError` if ``data`` (from ``fc.encode_args``)
    would not decode into ``fc``'s annotated parameter types."""
    try:
        fc.decode_args(data, what=f"workflow {workflow!r}")
    except SerializationError as exc:
        raise _culprit(fc, data, workflow) or InvalidInputError(
            workflow, None, "the workflow's signature", str(exc)
        ) from None


def _culprit(fc: codec.FunctionCodec, data: bytes, workflow: str) -> InvalidInputError | None:
    """The first parameter whose value does not decode alone (error path only)."""
    values: dict[str, Any] = codec.decode(data)
    for name, param in fc.signature.parameters.items():
        if name not in values:
            continue
        hint = fc.hints.get(name, Any)
        if param.kind is _P.VAR_POSITIONAL:
            expected: Any = tuple[hint, ...]  # type: ignore[valid-type]
        elif param.kind is _P.VAR_KEYWORD:
            expected = dict[str, hint]  # type: ignore[valid-type]
        else:
            expected = hint
        try:
            codec.decode(codec.encode(values[name]), expected)
        except SerializationError as exc:
            detail = str(exc).split(": ", 1)[-1]  # msgspec's own words and path
            detail = detail.replace("`$", f"`$.{name}", 1) if "`$" in detail else detail
            return InvalidInputError(
                workflow,
                name,
                codec._type_name(expected),
                f"got {codec._repr.repr(values[name])} ({detail})",
            )
    return None
