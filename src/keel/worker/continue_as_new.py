"""Continue-as-new, as the driver carries it out: end the run, create its successor.

The workflow raised :class:`keel.errors.ContinueAsNew` with its successor's
encoded input. The driver journals ``run_continued`` and commits a turn
ending in :class:`keel.store.ports.Continue`, which in one fenced transaction
ends the run ``continued`` and creates the successor: the same workflow at the version
that is *current* in this worker, an empty journal, the new input, the same
chain id and parent. A crash before the commit leaves the run to the next
lease holder, whose replay asks for the same successor; a crash after it
leaves a run that has ended. Results the last turn journaled are committed
just before the switch, in a write of their own, so that a crash at the switch
never runs a completed step again. The successor's id is derived from the chain id
and its generation, so no retry can create a second one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import msgspec

from keel.core.commands import Outcome
from keel.core.events import EventType, RunContinued, encode_data, run_failed, run_started
from keel.core.journal import JournalEntry
from keel.core.replay import Execution
from keel.core.states import RunState
from keel.errors import RunExistsError
from keel.store.base import NewEvent, NewRun, RunRecord
from keel.store.ports import Continue, Finish, Turn

if TYPE_CHECKING:
    from keel.worker.driver import RunDriver


def successor_id(chain_id: str, generation: int) -> str:
    """The run id of generation ``generation`` of a chain (the first run is generation 0)."""
    return f"{chain_id}/continue:{generation}"


def successor_of(run: RunRecord, version: str, data: bytes) -> NewRun:
    """The run that continues ``run`` with input ``data`` at ``version``."""
    generation = run.generation + 1
    run_id = successor_id(run.chain, generation)
    first = run_started(
        run.workflow,
        version,
        data,
        chain_id=run.chain,
        generation=generation,
        continued_from=run.run_id,
        parent_run_id=run.parent_run_id,
    )
    started = NewEvent(EventType.RUN_STARTED.value, None, encode_data(first))
    return NewRun(
        run_id,
        run.workflow,
        version,
        data,
        started,
        parent_run_id=run.parent_run_id,
        parent_close=run.parent_close,
        depth=run.depth,
        chain_id=run.chain,
        generation=generation,
    )


async def continue_as_new(driver: RunDriver, ex: Execution, outcome: Outcome) -> None:
    """End the driver's run ``continued`` and start its successor, in one write."""
    run = driver.run
    registry = driver.worker.registry
    current = registry.find(run.workflow) or registry.find(run.workflow, run.version)
    version = current.version if current is not None else run.version
    data = outcome.result if outcome.result is not None else b"{}"
    successor = successor_of(run, version, data)
    # Two writes: what the turn journaled (step results) commits first, so a
    # crash at the switch never repeats a completed step; then the switch.
    done = ex.take_outbox()
    if done:
        await driver.store.runs.commit(driver.lease, Turn(done[0].seq, _events(done)))
    ex.record(
        None, RunContinued(continued_to=successor.run_id, version=version, input=msgspec.Raw(data))
    )
    entries = ex.take_outbox()
    for item in driver.inflight.values():
        item.task.cancel()  # pending commands are discarded, as on cancel
    first = entries[0].seq
    try:
        await driver.store.runs.commit(
            driver.lease, Turn(first, _events(entries), end=Continue(successor))
        )
    except RunExistsError as exc:
        # The successor's id is taken by a run of another chain: nothing was
        # written. The run cannot continue, so it fails and says why.
        event, error = run_failed(exc)
        failed = NewEvent(EventType.RUN_FAILED.value, None, encode_data(event))
        await driver.store.runs.commit(
            driver.lease,
            Turn(first, [*_events(entries[:-1]), failed], end=Finish(RunState.FAILED, error=error)),
        )
    # Waiters in this process re-read the run and follow the chain.
    driver.worker.notify_finished(run.run_id, None)


def _events(entries: Sequence[JournalEntry]) -> list[NewEvent]:
    return [NewEvent(e.type.value, e.command, e.data) for e in entries]
