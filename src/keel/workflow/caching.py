"""Cross-run result caching of steps and graph nodes (``cache=True``).

A cached call's key is a digest of the step's *code* and of its *arguments'
values*; the key is an idempotency key, so the result a call with that key
stored first (in any run, on any worker) is reused without running the body,
journaled as a step completion like any other, and concurrent equal calls
converge on one result. The code digest covers the function's source, the
values its closure captures and its defaults; ``cache_version=`` pins it
instead (when the source changes but the results would not, or for code
whose source cannot be read). So a change of code or of a captured value
misses; equal inputs hit.
"""

from __future__ import annotations

import hashlib
import inspect
import textwrap
from collections.abc import Callable
from typing import Any

from keel.core import codec

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
        h.update(textwrap.dedent(inspect.getsource(target)).encode())
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


def key_function(
    fn: Callable[..., Any], version: str | None, encode_args: Callable[..., bytes]
) -> Callable[..., str]:
    """The idempotency-key function of a cached step: ``encode_args(args, kwargs)``
    gives the call's canonical argument bytes (the step's codec)."""
    code = code_digest(fn, version)

    def key(*args: Any, **kwargs: Any) -> str:
        return cache_key(code, encode_args(args, kwargs))

    return key
