"""Child workflows, as workflow code sees them: start, await, fan out, fan in.

``start_child`` journals a ``child`` command; the worker creates the child run
and journals ``child_started`` in the same transaction, and later journals the
child's outcome (``child_completed``/``child_failed``/``child_cancelled``).
Replay returns those events, so replaying a parent never starts a child again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from keel.core import codec, names
from keel.core.commands import Command
from keel.core.events import CommandKind
from keel.core.replay import Execution, current_execution
from keel.errors import ConfigurationError, SerializationError, WorkflowError
from keel.workflow.definitions import WorkflowDef

R = TypeVar("R")

ParentClose = Literal["cancel", "abandon", "wait"]
PARENT_CLOSE: tuple[str, ...] = ("cancel", "abandon", "wait")
MAX_RUN_ID = 200  # as Client.start


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """What the worker needs to create the child run (the command's target)."""

    workflow: str
    version: str
    run_id: str
    parent_close: str
    #: The child's definition: a graph's spec is stored before its run is created.
    definition: Any = field(default=None, compare=False, repr=False)


class ChildHandle(Generic[R]):
    """A child run started by this workflow; ``await handle.result()`` for its outcome."""

    def __init__(self, execution: Execution, cmd: Command, run_id: str, workflow: str) -> None:
        self._execution = execution
        self._cmd = cmd
        self.run_id = run_id
        self.workflow = workflow

    async def result(self) -> R:
        """The child's result; raises :class:`keel.ChildWorkflowError` if it failed,
        :class:`keel.ChildWorkflowCancelled` if it was cancelled."""
        if current_execution() is not self._execution:
            raise WorkflowError(
                f"unknown child {self.run_id!r}: this handle belongs to another workflow "
                "run (or is used outside a workflow); await a child only in the run that "
                "started it"
            )
        value: R = await self._cmd.future
        return value

    def __repr__(self) -> str:
        return f"<ChildHandle {self.run_id} ({self.workflow})>"


async def start_child(
    workflow: WorkflowDef[Any, R],
    *args: Any,
    child_id: str | None = None,
    parent_close: ParentClose = "cancel",
    **kwargs: Any,
) -> ChildHandle[R]:
    """Start a child run of ``workflow`` and return its handle once it exists.

    The child's run id is ``child_id`` or derived from this run's id and the
    command, so it is the same on every replay. ``parent_close`` says what
    happens to a child still open when this run ends: ``"cancel"`` it
    (default), ``"abandon"`` it (it runs on), or ``"wait"`` for it (this run
    finishes only after the child has). Arguments are checked here; a child
    that cannot start (its id is taken, too deep) raises
    :class:`keel.ChildWorkflowError`.
    """
    execution = current_execution()
    if execution is None:
        raise WorkflowError("start_child() can only be used inside a workflow")
    if not isinstance(workflow, WorkflowDef):
        raise ConfigurationError(f"start_child() needs a @keel.workflow, not {workflow!r}")
    if parent_close not in PARENT_CLOSE:
        raise ConfigurationError(
            f"parent_close must be one of {', '.join(PARENT_CLOSE)}, not {parent_close!r}"
        )
    if child_id is not None:
        names.name(child_id, "child_id")
    try:
        data = codec.encode_args(
            workflow.fn, args, kwargs, what=f"child workflow {workflow.name!r}"
        )
    except TypeError as exc:
        if isinstance(exc, SerializationError):
            raise
        raise TypeError(f"bad arguments for child workflow {workflow.name!r}: {exc}") from None
    cmd = execution.issue(
        CommandKind.CHILD,
        workflow.name,
        result_type=workflow.result_type,
        args=data,
        hash_extra=f"\x00{child_id or ''}\x00{parent_close}".encode(),
    )
    run_id = child_id if child_id is not None else derived_child_id(execution.run_id, cmd.key)
    cmd.target = ChildSpec(workflow.name, workflow.version, run_id, parent_close, workflow)
    assert cmd.started is not None
    started = await cmd.started
    return ChildHandle(execution, cmd, started, workflow.name)


async def run_child(
    workflow: WorkflowDef[Any, R],
    *args: Any,
    child_id: str | None = None,
    parent_close: ParentClose = "cancel",
    **kwargs: Any,
) -> R:
    """Start a child run and wait for its result (``start_child`` then ``result``)."""
    handle = await start_child(
        workflow, *args, child_id=child_id, parent_close=parent_close, **kwargs
    )
    return await handle.result()


def get_child(run_id: str) -> ChildHandle[Any]:
    """The handle of a child this run started earlier, by its run id.

    Raises :class:`keel.WorkflowError` if this run started no child with that id.
    """
    execution = current_execution()
    if execution is None:
        raise WorkflowError("get_child() can only be used inside a workflow")
    for cmd in execution.children():
        if cmd.child_run_id == run_id:
            return ChildHandle(execution, cmd, run_id, cmd.id.name)
    raise WorkflowError(
        f"unknown child {run_id!r}: this workflow run started no child with that id"
    )


def derived_child_id(parent_run_id: str, command_key: str) -> str:
    """The child's run id when the caller gives none: stable across replays."""
    run_id = f"{parent_run_id}/{command_key}"
    if len(run_id) <= MAX_RUN_ID:
        return run_id
    # Deep trees: keep ids within the run-id limit.
    return "child-" + hashlib.sha256(run_id.encode()).hexdigest()[:40]
