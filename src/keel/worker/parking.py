"""Parking: a worker that lacks a run's workflow version releases the run
untouched (:meth:`keel.worker.effects.RunEffects.release`); any worker may try
it again ``park_delay`` seconds later, and one that has its version finishes it."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from keel.observe import metrics
from keel.observe.logs import run_fields
from keel.store.base import RunRecord

if TYPE_CHECKING:
    from keel.worker.worker import Worker

log = logging.getLogger("keel.worker")


def report_parked(worker: Worker, run: RunRecord) -> None:
    """Say why ``run`` was parked: once per missing version and worker as a
    WARNING (a parked run comes back), then at DEBUG."""
    name, version = run.workflow, run.version
    loaded = ", ".join(wf.version for wf in worker.registry.versions(name))
    why = (
        f"workflow {name!r} version {version!r} is not loaded here (loaded: {loaded})"
        if loaded
        else f"workflow {name!r} is not registered here"
    )
    seen = (name, version) in worker.missing_versions
    worker.missing_versions.add((name, version))
    level = logging.DEBUG if seen else logging.WARNING
    log.log(
        level,
        "run %s: %s; parked it (lease released, retried in %gs)",
        run.run_id,
        why,
        worker.park_delay,
        extra=run_fields(run.run_id, name),
    )
    metrics.run_parked(name)
