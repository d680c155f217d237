"""Counting step executions for the crash tester, and checking the caller's
invariant after each.

While a crash test runs, every registered step's body is wrapped
(:func:`counting`): each execution is attributed, through a context
variable set around a worker's start (every task the worker creates, and
every step thread, inherits it), to the :class:`Scene` of the run it belongs
to and to the worker (first or second) that ran it. Bodies run outside a
crash test (other workers of the process) pass through uncounted.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from keel.testing.crash_report import CrashFailure, StepExecution
from keel.testing.crash_store import Landed
from keel.workflow.context import current_step
from keel.workflow.definitions import StepDef
from keel.workflow.registry import Registry

__all__ = ["Here", "Invariant", "Scene", "attributed", "broken", "counting"]

#: The caller's invariant: ``None``/``True`` holds; ``False`` or an exception breaks it.
Invariant = Callable[[], object]


@dataclass
class Scene:
    """One run from scratch: what its workers wrote, which step bodies ran,
    and the first time the invariant broke."""

    landed: Landed
    invariant: Invariant | None
    executions: list[StepExecution] = field(default_factory=list)
    broken: CrashFailure | None = None
    _counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    _attempts: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def begin(self, worker: str) -> StepExecution | None:
        info = current_step()
        if info is None:
            return None
        # The step's idempotency key is "<run id>:<command>" (documented).
        command = info.idempotency_key.removeprefix(f"{info.run_id}:")
        key = (info.run_id, command)
        with self._lock:
            self._counts[key] += 1
            self._attempts[(*key, info.attempt)] += 1
            journaled = self.landed.step_ended.get(key)
            if journaled is None:
                journaled = self.landed.attempt_failed.get((*key, info.attempt))
            ex = StepExecution(
                info.step,
                info.run_id,
                command,
                info.attempt,
                self._counts[key],
                worker,
                repeat=self._attempts[(*key, info.attempt)] > 1,
                journaled_at=journaled,
            )
            self.executions.append(ex)
        return ex

    def failures(self) -> list[CrashFailure]:
        """The broken promises of this run, once it has ended: the invariant
        (after a step execution, else now) and steps run after their end was
        journaled."""
        found: list[CrashFailure] = []
        if self.broken is not None:
            found.append(self.broken)
        elif self.invariant is not None:
            problem = broken(self.invariant)
            if problem is not None:
                found.append(
                    CrashFailure(None, None, "invariant", f"broken once the run ended: {problem}")
                )
        for ex in self.executions:
            if ex.journaled_at is not None:
                found.append(
                    CrashFailure(
                        None,
                        None,
                        "rerun",
                        f"{ex} ran although write {ex.journaled_at} had journaled "
                        "its end (or this attempt's failure)",
                        ex.step,
                        ex.attempt,
                        ex.number,
                    )
                )
        return found

    def end(self, ex: StepExecution | None) -> None:
        if ex is None or self.invariant is None:
            return
        problem = broken(self.invariant)
        if problem is None:
            return
        with self._lock:
            if self.broken is None:
                self.broken = CrashFailure(
                    None,
                    None,
                    "invariant",
                    f"broken after {ex}: {problem}",
                    ex.step,
                    ex.attempt,
                    ex.number,
                )


@dataclass(frozen=True, slots=True)
class Here:
    scene: Scene
    worker: str


#: Which scene and worker the code running now belongs to (see :func:`attributed`).
_where: contextvars.ContextVar[Here | None] = contextvars.ContextVar(
    "keel_crash_test", default=None
)


@contextlib.contextmanager
def attributed(scene: Scene, worker: str) -> Iterator[None]:
    """Step executions started by tasks created inside the ``with`` count for
    ``scene`` and ``worker``: set around a worker's start, every task it creates
    (and every step thread) inherits it."""
    token = _where.set(Here(scene, worker))
    try:
        yield
    finally:
        _where.reset(token)


def broken(invariant: Invariant) -> str | None:
    """Why the invariant does not hold, or ``None`` if it does."""
    try:
        held = invariant()
    except Exception as exc:
        text = str(exc).replace("\n", "\n      ")  # pytest's assert explanations: indented
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return "the invariant returned False" if held is False else None


def counted(step: StepDef[Any, Any]) -> Callable[..., Any]:
    """``step``'s current body (real, or a fake), counting its executions."""
    original = step.fn

    def begin() -> tuple[Scene, StepExecution | None] | None:
        at = _where.get()
        return None if at is None else (at.scene, at.scene.begin(at.worker))

    if step.is_async:

        @functools.wraps(original)
        async def async_body(*args: Any, **kwargs: Any) -> Any:
            started = begin()
            try:
                return await original(*args, **kwargs)
            finally:
                if started is not None:
                    started[0].end(started[1])

        return async_body

    @functools.wraps(original)
    def sync_body(*args: Any, **kwargs: Any) -> Any:
        started = begin()
        try:
            return original(*args, **kwargs)
        finally:
            if started is not None:
                started[0].end(started[1])

    return sync_body


#: Steps whose bodies count executions now: id -> (step, its body before,
#: how many crash tests use it). One wrapper serves every crash test running
#: in the process (each finds its own run through ``here``), so concurrent
#: ones do not undo each other's.
_installed: dict[int, tuple[StepDef[Any, Any], Callable[..., Any], int]] = {}
_lock = threading.Lock()


@contextlib.contextmanager
def counting(registries: list[Registry]) -> Iterator[None]:
    steps: dict[int, StepDef[Any, Any]] = {}
    for reg in registries:
        for name in reg.step_names():
            st = reg.get_step(name)
            steps[id(st)] = st
    with _lock:
        for key, st in steps.items():
            step, before, users = _installed.get(key, (st, st.fn, 0))
            if users == 0:
                st.fn = counted(st)
            _installed[key] = (step, before, users + 1)
    try:
        yield
    finally:
        with _lock:
            for key in steps:
                step, before, users = _installed[key]
                if users == 1:
                    step.fn = before
                    del _installed[key]
                else:
                    _installed[key] = (step, before, users - 1)
