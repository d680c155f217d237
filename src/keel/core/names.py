"""Checks for the strings Keel stores and looks up as keys: run ids, workflow,
signal and queue names, schedule ids.

Every backend must accept or refuse the same strings, before anything is
written: PostgreSQL ``text`` cannot hold NUL, and a lone surrogate cannot be
encoded as UTF-8 at all (SQLite and PostgreSQL raised ``UnicodeEncodeError``,
the memory store took it). A value of another type is a ``TypeError``; a str
that no backend could store is a :class:`ConfigurationError`.
"""

from __future__ import annotations

from keel.errors import ConfigurationError

__all__ = ["MAX_NAME", "name", "optional_text", "text"]

MAX_NAME = 200  # run ids, signal names: as step, queue and patch names


def text(value: object, what: str) -> str:
    """``value`` if it is a str every backend can store and find exactly."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}: {value!r}")
    if "\x00" in value:
        raise ConfigurationError(f"{what} must not contain NUL characters: {value!r}")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ConfigurationError(
                f"{what} is not valid Unicode text (a lone surrogate at index {exc.start}): "
                f"{value!r}"
            ) from None
    return value


def optional_text(value: object, what: str) -> str | None:
    """:func:`text`, or ``None``."""
    return None if value is None else text(value, what)


def name(value: object, what: str, *, hash_ok: bool = True) -> str:
    """A key Keel creates: :func:`text`, non-empty, at most :data:`MAX_NAME` chars,
    and without ``#`` unless ``hash_ok`` (``#`` separates a name from its ordinal
    in command ids)."""
    value = text(value, what)
    if not value or len(value) > MAX_NAME or (not hash_ok and "#" in value):
        rule = "a non-empty string" + ("" if hash_ok else " without '#'")
        raise ConfigurationError(f"{what} must be {rule} (at most {MAX_NAME} chars): {value!r}")
    return value
