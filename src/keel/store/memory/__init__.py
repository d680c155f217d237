"""The in-memory store (``memory://``): one process, nothing survives it."""

from keel.store.memory.store import MemoryStore

__all__ = ["MemoryStore"]
