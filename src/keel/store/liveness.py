"""Worker liveness: a lock that dies with its process, so a dead worker's runs move at once.

Without it a killed worker's runs wait for their leases to expire (the lease
TTL). A store that offers liveness gives each worker a lock the operating
system or the database drops the instant the worker's process dies (a flock on
a per-worker file for SQLite, a session-level advisory lock for PostgreSQL),
and lets any worker find owners whose lock is gone and expire their leases
early. Fencing is unchanged: an expired lease is taken by the next claim under
a larger token, and the dead holder's writes (should it not be dead after all)
fail as they would after a normal expiry. Owners that never took a liveness
lock (older workers, direct store users) are never judged dead; their leases
still expire after the TTL.

These methods are not in the :class:`~keel.store.base.Store` protocol: the
worker looks them up on the store (a store without them, like the in-memory
one, runs on the TTL alone).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


class LivenessLock(Protocol):
    """A worker's liveness lock, held from :meth:`LivenessStore.hold_liveness` on."""

    @property
    def held(self) -> bool:
        """Whether the lock is held now. ``False`` after a lost database session
        until it is taken again: other workers may be expiring our leases, so
        the worker should not claim meanwhile."""

    async def release(self) -> None:
        """Give the lock up and unregister the owner (a worker that stops). Idempotent."""


@runtime_checkable
class LivenessStore(Protocol):
    """A store that can tell dead workers from slow ones without waiting for their leases."""

    async def hold_liveness(self, owner: str) -> LivenessLock | None:
        """Take ``owner``'s liveness lock for the life of this process and register
        the owner as taking part; ``None`` if the lock cannot be had (another live
        holder of the same owner name), in which case the owner's leases expire
        only by TTL."""

    async def expire_dead_owners(self) -> int:
        """Expire now (a compare-and-set on the lease row) the leases of registered
        owners whose liveness lock is no longer held; return how many were expired."""
