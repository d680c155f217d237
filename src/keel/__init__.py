"""Keel: durable workflows for Python.

Decorate ``async def`` workflows and their steps, start runs with a
:class:`Client`, execute them with a :class:`Worker`; every step result,
timer and signal is journaled, so runs survive crashes and restarts.
"""

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
    ConfigurationError,
    ControlFlowSwallowedError,
    DatabaseError,
    InvalidScheduleError,
    KeelControl,
    KeelError,
    LeaseLostError,
    NondeterminismError,
    ResultTimeoutError,
    RunCancelledError,
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
from keel.schedules import ScheduleInfo
from keel.store import open_store
from keel.worker import Worker

__version__ = "0.1.0"

__all__ = [
    "Client",
    "ConfigurationError",
    "ControlFlowSwallowedError",
    "DatabaseError",
    "HistoryEvent",
    "InvalidScheduleError",
    "KeelControl",
    "KeelError",
    "LeaseLostError",
    "NondeterminismError",
    "Registry",
    "ResultTimeoutError",
    "RetryPolicy",
    "RunCancelledError",
    "RunFailedError",
    "RunFinishedError",
    "RunHandle",
    "RunInfo",
    "RunList",
    "RunNotFoundError",
    "RunState",
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
    "current_step",
    "in_workflow",
    "now",
    "open_store",
    "random",
    "side_effect",
    "sleep",
    "step",
    "uuid4",
    "wait_for_signal",
    "workflow",
]
