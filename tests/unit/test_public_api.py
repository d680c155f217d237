"""The public API: one curated, sorted ``__all__``; everything in it is documented.

``keel.__all__`` is pinned to the literal list below, so adding or removing a
public name takes a deliberate edit here too. ``keel.testing`` and
``keel.errors`` define no ``__all__``; every exception ``keel.errors`` defines
must be in ``keel.__all__``, so the pin covers the exception tree as well.
"""

from __future__ import annotations

import inspect

import keel
from keel import errors

PUBLIC_API = [
    "ChildHandle",
    "ChildWorkflowCancelled",
    "ChildWorkflowError",
    "Client",
    "ConfigurationError",
    "ContinueAsNew",
    "ControlFlowSwallowedError",
    "DatabaseCorruptError",
    "DatabaseError",
    "FactDigestError",
    "FactNotFoundError",
    "ForkPointError",
    "Graph",
    "GraphDefinitionError",
    "GraphWorkflow",
    "HistoryEvent",
    "IllegalTransitionError",
    "InvalidInputError",
    "InvalidScheduleError",
    "KeelControl",
    "KeelError",
    "LeaseLostError",
    "NodeError",
    "NodeFailedError",
    "NondeterminismError",
    "PatchMismatchError",
    "QueueInfo",
    "Registry",
    "ResultTimeoutError",
    "RetryPolicy",
    "RunCancelledError",
    "RunCancellingError",
    "RunExistsError",
    "RunFailedError",
    "RunFinishedError",
    "RunHandle",
    "RunInfo",
    "RunList",
    "RunNotFoundError",
    "RunNotStuckError",
    "RunState",
    "RunTerminatedError",
    "Saga",
    "ScheduleExistsError",
    "ScheduleInfo",
    "ScheduleNotFoundError",
    "SchemaMissingError",
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


def test_all_is_exactly_the_pinned_public_api() -> None:
    added = sorted(set(keel.__all__) - set(PUBLIC_API))
    removed = sorted(set(PUBLIC_API) - set(keel.__all__))
    assert keel.__all__ == PUBLIC_API, f"added {added}, removed {removed}"


def test_all_is_sorted_unique_and_importable() -> None:
    assert keel.__all__ == sorted(keel.__all__)
    assert len(set(keel.__all__)) == len(keel.__all__)
    for name in keel.__all__:
        assert hasattr(keel, name), name


def test_public_names_have_docstrings() -> None:
    for name in keel.__all__:
        obj = getattr(keel, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"keel.{name} has no docstring"


def test_every_keel_exception_is_in_the_one_tree_and_exported() -> None:
    raised = [
        obj
        for obj in vars(errors).values()
        if inspect.isclass(obj)
        and issubclass(obj, BaseException)
        and obj.__module__ == errors.__name__
    ]
    for exc in raised:
        assert issubclass(exc, keel.KeelError | keel.KeelControl), exc
        assert exc.__name__ in keel.__all__, f"{exc.__name__} is not exported"
    # Control flow must not be catchable by `except Exception`.
    assert not issubclass(keel.KeelControl, Exception)
