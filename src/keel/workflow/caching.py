"""Cross-run result caching of steps and graph nodes (``cache=True``).

A cached call's key is a digest of the step's *code* and of its *arguments'
values*; the key is an idempotency key, so the result a call with that key
stored first (in any run, on any worker) is reused without running the body,
journaled as a step completion like any other, and concurrent equal calls
converge on one result. The code digest covers the function's source, the
values its closure captures and its defaults (not its decorators, whose
options such as a TTL do not change what it computes); ``cache_version=`` pins it
instead (when the source changes but the results would not, or for code
whose source cannot be read). So a change of code or of a captured value
misses; equal inputs hit.

A TTL (``cache_ttl=`` on a step, ``ttl=`` on a graph node) bounds reuse: an
entry stored longer ago than that, by the store's clock, counts as missing,
so the next equal call runs the body and its result replaces the entry (the
store swaps it atomically, so concurrent equal calls after the expiry still
converge on one result). The TTL only bounds reuse: a run's journal keeps the
result it used, so replay never asks the cache again.

A call's key digests the same canonical argument bytes that the step command
carries, so they are encoded once per call (see ``StepDef._issue``).
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import math
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from keel.core import codec
from keel.errors import ConfigurationError

#: How deep captured functions are followed into their own closures.
_MAX_DEPTH = 3


def code_digest(fn: Callable[..., Any], version: str | None = None) -> str:
    """16 hex digits naming ``fn``'s code (or its ``version`` pin)."""
    h = hashlib.sha256()
    h.update(f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', '')}\0".encode())
    if version is not None:
        h.update(f"version={version}".encode())
    else:
        _feed(h, fn, 0)
    return h.hexdigest()[:16]


def _feed(h: Any, fn: Any, depth: int) -> None:
    target = inspect.unwrap(fn)
    code = getattr(target, "__code__", None)
    try:
        h.update(_from_def(textwrap.dedent(inspect.getsource(target))).encode())
    except (OSError, TypeError):
        # No source (a REPL, a C function): the bytecode and its constants.
        if code is not None:
            h.update(code.co_code)
            h.update(repr(code.co_consts).encode())
        else:
            h.update(repr(target).encode())
    for value in (getattr(target, "__defaults__", None), getattr(target, "__kwdefaults__", None)):
        h.update(_stable(value, depth).encode())
    if code is not None:
        cells = getattr(target, "__closure__", None) or ()
        for name, cell in zip(code.co_freevars, cells, strict=False):
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                value = None
            h.update(f"\0{name}=".encode())
            h.update(_stable(value, depth).encode())


def _from_def(source: str) -> str:
    """The source from its ``def`` line on: the decorators' options (a TTL, a
    retry policy) do not change what the body computes, so changing them keeps
    the cache."""
    try:
        node = ast.parse(source).body[0]
    except (SyntaxError, IndexError):
        return source
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return source  # a lambda's line, a class
    return "\n".join(source.splitlines()[node.lineno - 1 :])


def _stable(value: Any, depth: int) -> str:
    """A text that changes when ``value`` does, equal across processes."""
    if callable(value) and hasattr(value, "__code__") and depth < _MAX_DEPTH:
        inner = hashlib.sha256()
        _feed(inner, value, depth + 1)
        return f"fn:{inner.hexdigest()}"
    try:
        return codec.encode(value, canonical=True).decode()
    except Exception:
        return f"{type(value).__module__}.{type(value).__qualname__}:{value!r}"


def cache_key(code: str, encoded_args: bytes) -> str:
    """The idempotency key of a cached call: code digest and arguments' digest."""
    return f"cache:{code}:{hashlib.sha256(encoded_args).hexdigest()[:32]}"


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """How a ``cache=True`` step is cached: its code digest (part of every key)
    and how long a stored result may be reused (``None``: for ever)."""

    code: str
    ttl: float | None = None

    def key(self, encoded_args: bytes) -> str:
        """The idempotency key of a call with these canonical argument bytes."""
        return cache_key(self.code, encoded_args)


def policy(fn: Callable[..., Any], version: str | None, ttl: float | None) -> CachePolicy:
    """The cache policy of ``fn`` (``ttl`` already checked by :func:`ttl_seconds`)."""
    return CachePolicy(code_digest(fn, version), ttl)


def ttl_seconds(value: object, what: str = "cache_ttl") -> float | None:
    """A TTL as seconds: ``None``, a number of seconds or a :class:`timedelta`,
    positive and finite; anything else is a :class:`ConfigurationError`."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise ConfigurationError(
            f"{what} must be seconds (a number) or a datetime.timedelta, not {value!r}"
        )
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ConfigurationError(
            f"{what} must be more than 0 seconds and finite (None: reuse for ever), not {value!r}"
        )
    return seconds
