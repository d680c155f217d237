"""Parking: a worker that lacks a run's workflow version releases the run untouched."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from keel.store.base import Lease, RunRecord
from keel.store.ports import Suspend, Turn

if TYPE_CHECKING:
    from keel.worker.worker import Worker

log = logging.getLogger("keel.worker")


async def park(worker: Worker, lease: Lease, run: RunRecord) -> None:
    """Release ``run`` without journaling anything; any worker may try it again
    ``worker.park_delay`` seconds later (one that has its version finishes it)."""
    delay = worker.park_delay
    # cancel_delivered: this worker cannot deliver a pending cancel request
    # either, so it must not make the run due at once again.
    await worker.store.runs.commit(
        lease,
        Turn(
            run.next_seq, [], end=Suspend(await worker.store.now() + delay, cancel_delivered=True)
        ),
    )
    name, version = run.workflow, run.version
    loaded = ", ".join(wf.version for wf in worker.registry.versions(name))
    why = (
        f"workflow {name!r} version {version!r} is not loaded here (loaded: {loaded})"
        if loaded
        else f"workflow {name!r} is not registered here"
    )
    # Warned once per missing version and worker: a parked run comes back.
    seen = (name, version) in worker.missing_versions
    worker.missing_versions.add((name, version))
    level = logging.DEBUG if seen else logging.WARNING
    log.log(level, "run %s: %s; parked it (lease released, retried in %gs)", run.run_id, why, delay)
