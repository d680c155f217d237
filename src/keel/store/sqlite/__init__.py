"""SQLite backend: the embedded default, shared by several processes on one machine."""

from keel.store.sqlite.store import SQLiteStore

__all__ = ["SQLiteStore"]
