"""The registry of workflows (by name and version) and steps (by name) that a
process knows, and the default one the decorators add to."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from keel.errors import ConfigurationError, WorkflowNotFoundError

if TYPE_CHECKING:
    from keel.workflow.definitions import StepDef, WorkflowDef

__all__ = ["Registry", "default_registry", "origin"]


class Registry:
    """Workflows (by name and version) and steps (by name) known to this process.

    Several versions of one workflow may be registered side by side: a run is
    resumed only by the version it started on, and new runs start on the
    *current* one. Steps are registered so that a worker serving a task queue
    can find the function of a dispatched step by the name stored with the task.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._workflows: dict[str, dict[str, WorkflowDef[Any, Any]]] = {}  # name -> version
        self._current: dict[str, WorkflowDef[Any, Any]] = {}
        self._steps: dict[str, StepDef[Any, Any]] = {}
        self._pairs: frozenset[tuple[str, str]] | None = None  # cache of pairs()

    def add(self, wf: WorkflowDef[Any, Any]) -> None:
        """Register a workflow version.

        The same function defined again replaces its entry (a re-import); when
        its version changed, the old one stays registered but is no longer
        current (so runs started on it can finish). Two functions may not
        share a name and version, and two functions may not both be current.
        """
        with self._lock:
            versions = self._workflows.get(wf.name, {})
            old = versions.get(wf.version)
            if old is not None and origin(old.fn) != origin(wf.fn):
                raise ConfigurationError(
                    f"workflow {wf.name!r} version {wf.version!r} is already registered by "
                    f"{origin(old.fn)}; give {origin(wf.fn)} another version (or name) "
                    "with @workflow(version=...)"
                )
            current = self._current.get(wf.name)
            if (
                wf.current
                and current is not None
                and current.version != wf.version
                and origin(current.fn) != origin(wf.fn)
            ):
                raise ConfigurationError(
                    f"workflow {wf.name!r} has two current versions: {current.version!r} "
                    f"({origin(current.fn)}) and {wf.version!r} ({origin(wf.fn)}); "
                    "register the one kept for older runs with @workflow(current=False)"
                )
            self._workflows[wf.name] = {**versions, wf.version: wf}
            self._pairs = None
            if wf.current:
                self._current[wf.name] = wf
            elif current is not None and current.version == wf.version:
                del self._current[wf.name]

    def get(self, name: str) -> WorkflowDef[Any, Any]:
        """The current version of workflow ``name``; :class:`WorkflowNotFoundError`
        if it is not registered or has no current version."""
        found = self._current.get(name)
        if found is not None:
            return found
        kept = self._workflows.get(name)
        if kept:
            listed = ", ".join(sorted(kept))
            raise WorkflowNotFoundError(
                f"workflow {name!r} has no current version (registered with current=False: "
                f"{listed}); new runs need one registered as current"
            )
        known = ", ".join(self.names()) or "none"
        raise WorkflowNotFoundError(f"no workflow named {name!r} is registered (known: {known})")

    def find(self, name: str, version: str | None = None) -> WorkflowDef[Any, Any] | None:
        """Workflow ``name`` at ``version`` (default: its current version), or None."""
        if version is None:
            return self._current.get(name)
        return self._workflows.get(name, {}).get(version)

    def versions(self, name: str) -> list[WorkflowDef[Any, Any]]:
        """Every registered version of workflow ``name``, in registration order."""
        return list(self._workflows.get(name, {}).values())

    def pairs(self) -> frozenset[tuple[str, str]]:
        """Every registered ``(name, version)``: what a worker on this registry claims."""
        pairs = self._pairs
        if pairs is None:
            with self._lock:
                pairs = frozenset((n, v) for n, vs in self._workflows.items() for v in vs)
                self._pairs = pairs
        return pairs

    def names(self) -> list[str]:
        """Names of the registered workflows, sorted."""
        return sorted(name for name, versions in self._workflows.items() if versions)

    def add_step(self, st: StepDef[Any, Any]) -> None:
        """Register a step by name; the same function defined again replaces it."""
        # One name, one function: re-importing a module replaces its definitions,
        # but two different functions under one name would make replay ambiguous.
        with self._lock:
            old = self._steps.get(st.name)
            if old is not None and origin(old.fn) != origin(st.fn):
                raise ConfigurationError(
                    f"step name {st.name!r} is already used by {origin(old.fn)}; "
                    f"give {origin(st.fn)} another name with @step(name=...)"
                )
            self._steps[st.name] = st

    def get_step(self, name: str) -> StepDef[Any, Any]:
        """The step registered under ``name``; ``ConfigurationError`` if there is none."""
        try:
            return self._steps[name]
        except KeyError:
            known = ", ".join(sorted(self._steps)) or "none"
            raise ConfigurationError(
                f"no step named {name!r} is registered (known: {known})"
            ) from None

    def find_step(self, name: str) -> StepDef[Any, Any] | None:
        return self._steps.get(name)

    def step_names(self) -> list[str]:
        return sorted(self._steps)


#: The registry the decorators add to, and workers use by default.
default_registry = Registry()


def origin(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
