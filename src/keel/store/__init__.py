"""Storage: the :class:`~keel.store.ports.Store` protocol, its records and the backends.

:func:`open_store` maps a URL to a backend (without opening it)::

    memory://                      MemoryStore (this process only)
    sqlite:///rel/path/keel.db     SQLiteStore on a path relative to the working directory
    sqlite:////abs/path/keel.db    SQLiteStore on /abs/path/keel.db (SQLAlchemy's convention)
    keel.db  ./x.sqlite  ~/y.sqlite3   a bare path ending .db/.sqlite/.sqlite3
    postgresql://user@host/db      PostgresStore (also postgres://; needs keel[postgres])

SQLite URLs accept ``?synchronous=NORMAL`` (see :class:`SQLiteStore`).
PostgreSQL URLs are libpq URLs, passed on as they are.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from keel.core.redact import redact
from keel.errors import ConfigurationError
from keel.store.base import (
    Claimed,
    EventRecord,
    Lease,
    NewEvent,
    NewRun,
    RenewOutcome,
    RunPage,
    RunRecord,
    SignalRecord,
    WorkerVersion,
)
from keel.store.memory import MemoryStore
from keel.store.ports import Store
from keel.store.sqlite import SQLiteStore

if TYPE_CHECKING:
    from keel.store.postgres import PostgresStore

__all__ = [
    "Claimed",
    "EventRecord",
    "Lease",
    "MemoryStore",
    "NewEvent",
    "NewRun",
    "RenewOutcome",
    "RunPage",
    "RunRecord",
    "SQLiteStore",
    "SignalRecord",
    "Store",
    "WorkerVersion",
    "open_store",
]

_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")
_SQLITE_OPTIONS = frozenset({"synchronous"})


def open_store(url: str) -> Store:
    """The store a URL names (not yet opened); ``ConfigurationError`` if none does."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError(f"store URL must be a non-empty string, not {url!r}")
    url = url.strip()
    shown = redact(url)  # the URL as errors quote it
    if url == "memory://":
        return MemoryStore()
    if url.startswith("sqlite://"):
        if not url.startswith("sqlite:///"):
            raise ConfigurationError(
                f"store URL {shown!r}: write 'sqlite:///relative/path.db' or "
                "'sqlite:////absolute/path.db' (three slashes, then the path)"
            )
        path, _, query = url.removeprefix("sqlite:///").partition("?")
        return _sqlite(url, path, query)
    if "://" not in url and url.lower().endswith(_SQLITE_SUFFIXES):
        return SQLiteStore(os.path.expanduser(url))
    if url.lower().startswith(_POSTGRES_SCHEMES):
        return _postgres(url)
    raise ConfigurationError(
        f"unsupported store URL {shown!r}: use 'memory://', 'sqlite:///relative/path.db', "
        "'sqlite:////absolute/path.db', a file path ending in .db, .sqlite or .sqlite3, "
        "or 'postgresql://user@host/database'"
    )


def _postgres(url: str) -> PostgresStore:
    # Imported here: psycopg is an optional dependency, unneeded for SQLite.
    try:
        from keel.store.postgres import PostgresStore
    except ImportError as exc:
        raise ConfigurationError(
            f"store URL {redact(url)!r} needs the PostgreSQL extra: "
            f"pip install 'keel[postgres]' ({exc})"
        ) from None
    return PostgresStore(url)


def _sqlite(url: str, path: str, query: str) -> SQLiteStore:
    if not path or path in (":memory:", "/:memory:"):
        raise ConfigurationError(
            f"store URL {redact(url)!r} names no database file (an in-memory SQLite database "
            "cannot be shared by Keel's connections; use 'memory://')"
        )
    options = parse_qs(query, keep_blank_values=True, strict_parsing=False)
    unknown = sorted(set(options) - _SQLITE_OPTIONS)
    if unknown:
        raise ConfigurationError(
            f"unknown option(s) {', '.join(unknown)} in store URL {redact(url)!r}; "
            f"known: {', '.join(sorted(_SQLITE_OPTIONS))}"
        )
    synchronous = options.get("synchronous", ["FULL"])[-1]
    return SQLiteStore(os.path.expanduser(path), synchronous=synchronous)
