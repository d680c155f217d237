"""Keel's one exception tree.

Everything Keel raises on purpose derives from :class:`KeelError` (ordinary
errors a caller may catch) or :class:`KeelControl` (control flow that workflow
code must never swallow)::

    Exception
    └── KeelError
        ├── ConfigurationError          bad options, retry policy, URL, unstorable id or name
        │   ├── InvalidScheduleError    bad cron expression, time zone or one-shot time
        │   └── GraphDefinitionError    a graph declaration's problems, every one listed
        ├── WorkflowNotFoundError       unknown workflow name
        ├── SerializationError          a payload cannot be encoded / decoded
        │   └── InvalidInputError       start(): an argument does not fit its annotation
        ├── RunNotFoundError            unknown run id
        ├── FactNotFoundError           no fact is stored under this digest
        ├── RunFinishedError            signal / cancel to a run that has ended
        ├── RunCancellingError          signal to a run whose cancel request is pending
        ├── RunFailedError              result() of a failed run
        ├── RunCancelledError           result() of a cancelled run
        ├── RunTerminatedError          result() of a run an operator terminated
        ├── RunNotStuckError            resume() of a run a worker holds and is moving
        ├── ForkPointError              retry()/fork() at a point that cannot be forked
        ├── ScheduleNotFoundError       unknown schedule id
        ├── ScheduleExistsError         a schedule with this id exists already
        ├── ResultTimeoutError          result() did not finish in time (also TimeoutError)
        ├── NondeterminismError         code and journal disagree on replay
        │   └── PatchMismatchError      a patch name now marks another place in the code
        ├── ControlFlowSwallowedError   workflow code swallowed a KeelControl
        ├── WorkflowError               misuse inside a workflow (asyncio.sleep, I/O, ...)
        │   ├── ChildWorkflowError      a child run failed or could not start (in the parent)
        │   └── ChildWorkflowCancelled  a child run was cancelled (in the parent)
        ├── StepFailedError             a step exhausted its retries (raised in the workflow)
        ├── StepTimeoutError            one step attempt exceeded its timeout
        ├── NodeFailedError             a graph run's node failed with no error route
        ├── SignalTimeoutError          wait_for_signal() timed out (raised in the workflow)
        └── StoreError                  storage-level failures
            ├── LeaseLostError          stale fencing token: the write changed nothing
            ├── RunExistsError          a child run's id is taken: nothing was written
            ├── IllegalTransitionError  a write would move a run off TRANSITIONS (a ValueError too)
            ├── FactDigestError         a fact's bytes do not hash to its digest (a ValueError too)
            └── DatabaseError           unreadable, foreign or too-new database, or no Keel schema
                ├── DatabaseCorruptError    the database file is damaged: retrying cannot help
                └── SchemaMissingError      no Keel schema there, and this store creates none
    BaseException
    └── KeelControl
        ├── WorkflowSuspended           the worker is evicting this execution
        ├── WorkflowCancelled           the run was cancelled
        └── ContinueAsNew               continue_as_new(): end this run, start its successor
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from keel.core.redact import redact


class KeelError(Exception):
    """Base class of every error Keel raises on purpose."""


class ConfigurationError(KeelError, ValueError):
    """Invalid configuration or arguments: decorator options, retry policy, URL, cursor,
    or a run id or name no backend can store (NUL, a lone surrogate, too long)."""


class InvalidScheduleError(ConfigurationError):
    """A schedule's cron expression, time zone or one-shot time is invalid.

    ``field`` names the culprit: ``"cron"``, ``"timezone"``, ``"at"`` or another
    argument of :meth:`keel.Client.schedule`.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class GraphDefinitionError(ConfigurationError):
    """A graph declaration has problems; ``problems`` lists every one of them,
    each with a stable ``path`` (``nodes.pay.after[1]``) and ``code`` (``cycle``,
    ``unknown_parent``, ...). Nothing was registered."""

    def __init__(self, graph: str, problems: list[GraphProblem]) -> None:
        lines = "\n".join(f"  {p.path}: {p.message} [{p.code}]" for p in problems)
        super().__init__(f"graph {graph!r} has {len(problems)} problem(s):\n{lines}")
        self.graph = graph
        self.problems = problems


@dataclass(frozen=True, slots=True)
class GraphProblem:
    """One problem of a graph declaration (see :class:`GraphDefinitionError`)."""

    path: str
    code: str
    message: str


class WorkflowNotFoundError(KeelError):
    """No workflow with this name is registered."""


class SerializationError(KeelError, TypeError):
    """A value cannot be encoded to (or decoded from) Keel's JSON payload format."""


class InvalidInputError(SerializationError):
    """A run's input does not fit the workflow's signature annotations.

    Raised by :meth:`keel.Client.start` (and ``keel start``) before anything is
    written; ``parameter`` names the argument (``None`` if no single one is to
    blame) and ``expected`` its annotated type.
    """

    def __init__(self, workflow: str, parameter: str | None, expected: str, detail: str) -> None:
        where = f"argument {parameter!r}" if parameter is not None else "the arguments"
        super().__init__(
            f"invalid input for {where} of workflow {workflow!r}: expected {expected}; {detail}"
        )
        self.workflow = workflow
        self.parameter = parameter
        self.expected = expected


class RunNotFoundError(KeelError, LookupError):
    """No run with this id exists."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"no run with id {run_id!r}")
        self.run_id = run_id


class FactNotFoundError(KeelError, LookupError):
    """No fact is stored under this digest (``Client.load_fact``, or a journal
    event whose stored value is missing)."""

    def __init__(self, digest: str, detail: str = "") -> None:
        msg = f"no fact is stored under digest {digest!r}"
        super().__init__(f"{msg}: {detail}" if detail else msg)
        self.digest = digest


class RunFinishedError(KeelError):
    """The run has already finished, so it cannot take this request."""

    def __init__(self, run_id: str, state: str, action: str) -> None:
        super().__init__(f"cannot {action} run {run_id!r}: it is already {state}")
        self.run_id = run_id
        self.state = state


class RunCancellingError(KeelError):
    """The run has a pending cancel request, so it takes no new signals (the
    workflow would never receive them); nothing was written."""

    def __init__(self, run_id: str, action: str = "signal") -> None:
        super().__init__(f"cannot {action} run {run_id!r}: it is being cancelled")
        self.run_id = run_id


class RunFailedError(KeelError):
    """The run ended in failure; ``error_type``/``message``/``traceback`` say why."""

    def __init__(self, run_id: str, error_type: str, message: str, traceback: str = "") -> None:
        super().__init__(f"run {run_id!r} failed: {error_type}: {message}")
        self.run_id = run_id
        self.error_type = error_type
        self.message = message
        self.traceback = traceback


class RunCancelledError(KeelError):
    """The run was cancelled before it produced a result."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id!r} was cancelled")
        self.run_id = run_id


class RunTerminatedError(KeelError):
    """The run was terminated by an operator (no cleanup code ran)."""

    def __init__(self, run_id: str, reason: str = "") -> None:
        detail = f": {reason}" if reason else ""
        super().__init__(f"run {run_id!r} was terminated{detail}")
        self.run_id = run_id
        self.reason = reason


class RunNotStuckError(KeelError):
    """``resume`` refused to take a run from the worker holding it: the worker
    renews its lease and has written to the run lately (pass ``force=True`` to
    take it anyway); nothing was written."""

    def __init__(self, run_id: str, detail: str) -> None:
        super().__init__(f"run {run_id!r} is not stuck: {detail}")
        self.run_id = run_id


class ForkPointError(KeelError, ValueError):
    """``retry``/``fork`` was asked to copy a journal up to a point it cannot be
    cut at (no such command or seq, or a child run still open there); nothing
    was written."""


class ScheduleNotFoundError(KeelError, LookupError):
    """No schedule with this id exists."""

    def __init__(self, schedule_id: str) -> None:
        super().__init__(f"no schedule with id {schedule_id!r}")
        self.schedule_id = schedule_id


class ScheduleExistsError(KeelError):
    """A schedule with this id exists already (delete it first to replace it)."""

    def __init__(self, schedule_id: str) -> None:
        super().__init__(f"a schedule with id {schedule_id!r} exists already")
        self.schedule_id = schedule_id


class ResultTimeoutError(KeelError, TimeoutError):
    """Waiting for a run's result took longer than the caller allowed."""


class NondeterminismError(KeelError):
    """Replay found the workflow code asking for something other than the journal holds."""

    def __init__(self, run_id: str, position: int | None, recorded: str, requested: str) -> None:
        where = f"at journal position {position}" if position is not None else "at the end"
        super().__init__(
            f"nondeterminism in run {run_id!r} {where}: the journal recorded {recorded}, "
            f"but the workflow code asked for {requested}"
        )
        self.run_id = run_id
        self.position = position
        self.recorded = recorded
        self.requested = requested


class PatchMismatchError(NondeterminismError):
    """The code first asks for patch ``patch`` at another place than where the run
    recorded it: the name was reused for another change, or the call moved."""

    def __init__(self, run_id: str, position: int, patch: str, recorded_at: int) -> None:
        super().__init__(
            run_id,
            position,
            f"patch {patch!r} first at journal position {recorded_at}",
            f"patch {patch!r} here (a patch name marks one change; "
            "give a new change a new name, and do not move a patch call)",
        )
        self.patch = patch
        self.recorded_at = recorded_at


class ControlFlowSwallowedError(KeelError):
    """Workflow code caught a Keel control exception and carried on."""


class WorkflowError(KeelError):
    """Something was done inside a workflow that a workflow may not do."""


class ChildWorkflowError(WorkflowError):
    """A child workflow failed, or could not be started (its id is taken, too deep).

    Raised inside the parent at ``start_child``/``handle.result()``; the parent may catch it.
    """

    def __init__(self, child_run_id: str, workflow: str, error_type: str, message: str) -> None:
        super().__init__(
            f"child workflow {workflow!r} (run {child_run_id!r}) failed: {error_type}: {message}"
        )
        self.child_run_id = child_run_id
        self.workflow = workflow
        self.error_type = error_type
        self.message = message


class ChildWorkflowCancelled(WorkflowError):
    """A child workflow was cancelled; raised inside the parent, which may catch it.

    An ordinary exception, unlike :class:`WorkflowCancelled`: the parent itself
    is not being cancelled.
    """

    def __init__(self, child_run_id: str, workflow: str) -> None:
        super().__init__(f"child workflow {workflow!r} (run {child_run_id!r}) was cancelled")
        self.child_run_id = child_run_id
        self.workflow = workflow


class StepFailedError(KeelError):
    """A step failed for good (retries exhausted or a non-retryable error).

    Raised inside the workflow at the ``await``; the workflow may catch it.
    """

    def __init__(self, step: str, attempts: int, error_type: str, message: str) -> None:
        super().__init__(
            f"step {step!r} failed after {attempts} attempt(s): {error_type}: {message}"
        )
        self.step = step
        self.attempts = attempts
        self.error_type = error_type
        self.message = message


class NodeFailedError(KeelError):
    """A graph run failed: nodes failed with no error route (``errors``), and the
    nodes downstream of them were blocked (``blocked``). Independent branches
    ran to their end first."""

    def __init__(self, graph: str, errors: list[Any], blocked: list[str]) -> None:
        failed = "; ".join(
            f"node {e.node!r} failed after {e.attempts} attempt(s): {e.error_type}: {e.message}"
            for e in errors
        )
        also = f" (blocked: {', '.join(blocked)})" if blocked else ""
        super().__init__(f"graph {graph!r}: {failed}{also}")
        self.graph = graph
        self.errors = errors
        self.blocked = blocked


class StepTimeoutError(KeelError, TimeoutError):
    """One attempt of a step ran longer than its per-attempt timeout."""


class SignalTimeoutError(KeelError, TimeoutError):
    """``wait_for_signal`` reached its timeout before a signal arrived."""

    def __init__(self, name: str, timeout: float) -> None:
        super().__init__(f"no signal {name!r} arrived within {timeout:g}s")
        self.name = name
        self.timeout = timeout


class StoreError(KeelError):
    """A storage backend failed or refused an operation."""


class LeaseLostError(StoreError):
    """The caller's fencing token is stale: another worker owns the run now.

    The rejected write changed nothing. For a dispatched step's task lease,
    ``task_id`` is set and ``token`` is the attempt the caller held.
    """

    def __init__(
        self, run_id: str, token: int, detail: str = "", *, task_id: int | None = None
    ) -> None:
        if task_id is None:
            msg = f"lease on run {run_id!r} with token {token} is no longer held"
        else:  # a dispatched step's task lease: ``token`` is the attempt number
            msg = f"lease on task {task_id} of run {run_id!r} at attempt {token} is no longer held"
        super().__init__(f"{msg}: {detail}" if detail else msg)
        self.run_id = run_id
        self.token = token
        self.task_id = task_id


class RunExistsError(StoreError):
    """Runs with these ids exist already, so the write that would create them wrote nothing."""

    def __init__(self, run_ids: list[str]) -> None:
        super().__init__(f"run id(s) already taken: {', '.join(map(repr, run_ids))}")
        self.run_ids = run_ids


class IllegalTransitionError(StoreError, ValueError):
    """A write would move a run between states :data:`keel.core.states.TRANSITIONS`
    does not connect (a finish in a live state, ``continued`` without a successor):
    the store refused it and wrote nothing."""


class FactDigestError(StoreError, ValueError):
    """A fact was offered under a digest that is not the sha256 of its bytes (or is
    not a digest at all): nothing was written."""


class DatabaseError(StoreError):
    """The database is unreadable, not a Keel database, or from a newer Keel."""


class DatabaseCorruptError(DatabaseError):
    """The database is damaged (SQLite's ``SQLITE_CORRUPT``/``SQLITE_NOTADB``,
    PostgreSQL's ``XX001``/``XX002``).

    Nothing Keel retries can mend it: a worker stops, a command exits non-zero.
    Restore it from a backup.
    """


class SchemaMissingError(DatabaseError):
    """The database holds no Keel schema, and this store was told not to create one
    (read commands never do: ``keel db migrate`` creates it)."""


class KeelControl(BaseException):
    """Control flow that workflow code must let through (never catch and ignore)."""


class WorkflowSuspended(KeelControl):
    """Thrown into a workflow execution that the worker is evicting from memory."""


class WorkflowCancelled(KeelControl):
    """Thrown into a workflow whose run was cancelled; clean up and re-raise."""


class ContinueAsNew(KeelControl):
    """Raised by :func:`keel.continue_as_new`: the run ends and a successor run of the
    same workflow starts with ``input`` (the encoded arguments). Let it through."""

    def __init__(self, input: bytes = b"[]") -> None:
        super().__init__("continue-as-new")
        self.input = input


def error_info(exc: BaseException) -> dict[str, Any]:
    """Type, message and traceback of ``exc`` as a JSON-friendly dict.

    Passwords in them (a URL an error names) are masked: this is what the
    journal keeps and every view of a run shows.
    """
    import traceback

    return {
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": redact(str(exc)),
        "traceback": redact("".join(traceback.format_exception(exc))),
    }
