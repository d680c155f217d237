"""Keel: durable workflows for Python.

Decorate ``async def`` workflows and their steps, start runs with a
:class:`Client`, execute them with a :class:`Worker`; every step result,
timer and signal is journaled, so runs survive crashes and restarts.
"""

from keel.chains import continue_as_new
from keel.children import ChildHandle, get_child, run_child, start_child
from keel.client import Client, HistoryEvent, RunHandle, RunInfo, RunList
from keel.context import (
    StepInfo,
    cancel_requested,
    current_step,
    deprecate_patch,
    in_workflow,
    now,
    patched,
    random,
    side_effect,
    sleep,
    uuid4,
    wait_for_signal,
)
from keel.core.retry import RetryPolicy
from keel.core.states import RunState
from keel.definitions import Registry, StepDef, WorkflowDef, step, workflow
from keel.errors import (
    ChildWorkflowCancelled,
    ChildWorkflowError,
    ConfigurationError,
    ContinueAsNew,
    ControlFlowSwallowedError,
    DatabaseError,
    InvalidScheduleError,
    KeelControl,
    KeelError,
    LeaseLostError,
    NondeterminismError,
    PatchMismatchError,
    ResultTimeoutError,
    RunCancelledError,
    RunExistsError,
    RunFailedError,
    RunFinishedError,
    RunNotFoundError,
    ScheduleExistsError,
    ScheduleNotFoundError,
    SerializationError,
    SignalTimeoutError,
    StepFailedError,
    StepTimeoutError,
    StoreError,
    WorkflowCancelled,
    WorkflowError,
    WorkflowNotFoundError,
    WorkflowSuspended,
)
from keel.saga import Saga, saga
from keel.schedules import ScheduleInfo
from keel.store import open_store
from keel.store.base import QueueInfo
from keel.worker import Worker

__version__ = "0.1.0"

__all__ = [
    "ChildHandle",
    "ChildWorkflowCancelled",
    "ChildWorkflowError",
    "Client",
    "ConfigurationError",
    "ContinueAsNew",
    "ControlFlowSwallowedError",
    "DatabaseError",
    "HistoryEvent",
    "InvalidScheduleError",
    "KeelControl",
    "KeelError",
    "LeaseLostError",
    "NondeterminismError",
    "PatchMismatchError",
    "QueueInfo",
    "Registry",
    "ResultTimeoutError",
    "RetryPolicy",
    "RunCancelledError",
    "RunExistsError",
    "RunFailedError",
    "RunFinishedError",
    "RunHandle",
    "RunInfo",
    "RunList",
    "RunNotFoundError",
    "RunState",
    "Saga",
    "ScheduleExistsError",
    "ScheduleInfo",
    "ScheduleNotFoundError",
    "SerializationError",
    "SignalTimeoutError",
    "StepDef",
    "StepFailedError",
    "StepInfo",
    "StepTimeoutError",
    "StoreError",
    "Worker",
    "WorkflowCancelled",
    "WorkflowDef",
    "WorkflowError",
    "WorkflowNotFoundError",
    "WorkflowSuspended",
    "cancel_requested",
    "continue_as_new",
    "current_step",
    "deprecate_patch",
    "get_child",
    "in_workflow",
    "now",
    "open_store",
    "patched",
    "random",
    "run_child",
    "saga",
    "side_effect",
    "sleep",
    "start_child",
    "step",
    "uuid4",
    "wait_for_signal",
    "workflow",
]
