"""Replay as the worker does it: a run's workflow code over its journal, up to
the live tail. The replay checker (:mod:`keel.replay`) replays recorded
journals through the same :class:`Replayer`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from keel.core import codec
from keel.core.commands import LiveSource
from keel.core.events import EventType
from keel.core.journal import JournalEntry
from keel.core.replay import Execution
from keel.store.base import EventRecord, RunRecord
from keel.workflow.definitions import WorkflowDef

if TYPE_CHECKING:
    from keel.worker.snapshots import Snapshots

#: What the worker's decoding of a run's input names (the checker recognises it).
INPUT_OF_WORKFLOW = "input of workflow "


class Replayer:
    """Builds executions of one run of ``workflow``: its input is decoded once,
    here (a :class:`keel.errors.SerializationError` if it no longer fits the
    workflow's parameters)."""

    def __init__(
        self,
        workflow: WorkflowDef[Any, Any],
        run_id: str,
        input: bytes,
        live: LiveSource,
        *,
        check_args: bool = True,
    ) -> None:
        self.workflow = workflow
        self.check_args = check_args
        self.run_id = run_id
        self.live = live
        self.args, self.kwargs = codec.decode_args(
            workflow.fn, input, what=f"{INPUT_OF_WORKFLOW}{workflow.name!r}"
        )

    def __call__(
        self,
        journal: Sequence[JournalEntry],
        recorded_hashes: Mapping[str, str | None] | None = None,
    ) -> Execution:
        """Run the workflow from the top over ``journal`` (a snapshot's compacted
        one, with the ``recorded_hashes`` it carries, or the whole journal).

        Raises :class:`keel.errors.NondeterminismError` if code and journal
        disagree; an execution that failed is unwound before the error leaves.
        """
        wf = self.workflow
        ex = Execution(
            self.run_id, wf.fn, self.args, self.kwargs, journal, self.live,
            workflow_name=wf.name, recorded_hashes=recorded_hashes,
            check_args=self.check_args,
        )  # fmt: skip
        try:
            ex.start()
        except BaseException:
            with contextlib.suppress(Exception):
                ex.evict()
            raise
        return ex


async def replay_run(run: RunRecord, replayer: Replayer, snapshots: Snapshots) -> Execution:
    """The run's execution at its live tail: replayed from its latest usable
    snapshot and the events after it, or from the whole journal (see
    :meth:`Snapshots.replay`); a run with nothing journaled yet reads nothing."""
    if run.next_seq == 1:  # only run_started, whose data replay does not read
        return replayer([JournalEntry(0, EventType.RUN_STARTED, None, b"{}")])
    return await snapshots.replay(run, replayer)


def journal_of(records: Iterable[EventRecord]) -> list[JournalEntry]:
    """Stored events as replay reads them (``ValueError`` for an unknown type:
    written by a newer Keel)."""
    return [JournalEntry(r.seq, EventType(r.type), r.command, r.data) for r in records]
