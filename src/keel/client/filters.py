"""Checks shared by the client's methods: workflow arguments and filters."""

from __future__ import annotations

from collections.abc import Iterable

from keel.core import names
from keel.workflow.definitions import WorkflowDef


def workflow_names(workflow: object) -> str | tuple[str, ...] | None:
    """``list``'s workflow filter, one name or several, each checked like any name."""
    if workflow is None:
        return None
    if isinstance(workflow, str):
        return names.text(workflow, "workflow")
    if isinstance(workflow, Iterable) and not isinstance(workflow, bytes | bytearray):
        return tuple(names.text(w, "workflow") for w in workflow)  # () filters nothing
    return names.text(workflow, "workflow")  # the TypeError that names the type


def check_workflow(workflow: object, method: str) -> None:
    if not isinstance(workflow, WorkflowDef | str):
        raise TypeError(f"{method}() needs a @keel.workflow or its name, not {workflow!r}")
