"""Keel: durable workflows for Python.

Decorate ``async def`` workflows and their steps, start runs with a
:class:`Client`, execute them with a :class:`Worker`; every step result,
timer and signal is journaled, so runs survive crashes and restarts.
"""

from keel.children import ChildHandle, get_child, run_child, start_child
from keel.client import Client, HistoryEvent, RunHandle, RunInfo, RunList
from keel.context import (
    StepInfo,
    current_step,
    in_workflow,
    now,
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
    ControlFlowSwallowedError,
    DatabaseError,
    KeelControl,
    KeelError,
    LeaseLostError,
    NondeterminismError,
    ResultTimeoutError,
    RunCancelledError,
    RunExistsError,
    RunFailedError,
    RunFinishedError,
    RunNotFoundError,
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
    "ControlFlowSwallowedError",
    "DatabaseError",
    "HistoryEvent",
    "KeelControl",
    "KeelError",
    "LeaseLostError",
    "NondeterminismError",
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
    "current_step",
    "get_child",
    "in_workflow",
    "now",
    "open_store",
    "random",
    "run_child",
    "side_effect",
    "sleep",
    "start_child",
    "step",
    "uuid4",
    "wait_for_signal",
    "workflow",
]
