"""The in-process link between a client and a worker of the same process.

``Client(worker=w)`` hands the runs it starts straight to ``w`` and waits on
``w`` for their outcome. The client sees the worker only through
:class:`LocalWorker`, so ``keel.client`` does not import ``keel.worker``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from keel.core.states import RunState
from keel.store.base import Claimed


@dataclass(frozen=True, slots=True)
class Finished:
    """How a run ended, handed to waiting clients in this process."""

    workflow: str
    version: str
    state: RunState
    result: bytes | None
    error: bytes | None


class LocalWorker(Protocol):
    """What a client uses of an in-process worker (:class:`keel.Worker` is one)."""

    @property
    def owner(self) -> str:
        """The worker's lease owner id."""

    @property
    def lease_ttl(self) -> float:
        """Seconds a lease lasts without a heartbeat."""

    def has_capacity(self) -> bool:
        """Whether it can drive one more run now."""

    def adopt(self, claimed: Claimed) -> None:
        """Drive a run the client created already leased to this worker."""

    def finished_waiter(self, run_id: str) -> asyncio.Future[Finished | None] | None:
        """A future resolved when the worker finishes ``run_id``; ``None`` if it
        is not driving that run."""

    def poke_cancel(self, run_id: str) -> None:
        """A cancel was requested for ``run_id``: tell its driver now."""

    def poke_lost(self, run_id: str, why: str) -> None:
        """An operator took ``run_id`` from its holder (terminate, resume): if this
        worker drives it, stop now, as on a lost lease, not at the next heartbeat."""
