"""The worker's opt-in pruner: deletes runs that ended long enough ago.

Any number of workers may prune one database: each batch is its own
transaction, and the store picks only runs whose whole family has ended (see
``RunAdmin.prune``), so two pruners at worst find less to do.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import keel.operations as operations

if TYPE_CHECKING:
    from keel.worker.worker import Worker

log = logging.getLogger("keel.worker")


class Pruner:
    """Every ``every`` seconds, prune the runs that ended over ``retention`` seconds ago."""

    def __init__(self, worker: Worker, retention: float, every: float) -> None:
        self.worker = worker
        self.retention = retention
        self.every = every

    async def loop(self) -> None:
        store = self.worker.store
        while True:
            try:
                ended_before = await store.now() - self.retention
                deleted = await operations.prune(store, ended_before=ended_before)
                if deleted:
                    log.info("pruned %d run(s) that ended over %gs ago", deleted, self.retention)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.worker.give_up(exc):
                    return
                log.exception("pruning old runs failed; trying again in %gs", self.every)
            await asyncio.sleep(self.every)
