"""Sagas: undo the completed steps of a block when it fails or is cancelled.

::

    async with keel.saga() as saga:
        hold = await reserve(order)       # @keel.step(compensate=release)
        await charge(order)               # @keel.step(compensate=refund)
        saga.add(notify_cancelled, order) # any step, as an explicit compensation
        await ship(order)

When an exception or :class:`keel.WorkflowCancelled` leaves the block, the
compensations of the steps that completed in it run newest first (all at once
with ``parallel=True``), each an ordinary journaled step with its own retry
policy, so a crash never runs one twice. A failed compensation is recorded in
:attr:`Saga.failures` and as a note on the error, and the others still run;
then the error is re-raised. Compensations are shielded: a cancel request that
arrives while they run waits for them and surfaces when they are done.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from keel.core import codec
from keel.core.replay import current_execution, reset_var, shielded
from keel.errors import ConfigurationError, WorkflowCancelled, WorkflowError, WorkflowSuspended
from keel.workflow.definitions import StepDef, by_name_params

_current_saga: contextvars.ContextVar[Saga | None] = contextvars.ContextVar(
    "keel_saga", default=None
)


@dataclass(frozen=True, slots=True)
class Compensation:
    """A step call that undoes an earlier one."""

    step: StepDef[Any, Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def __str__(self) -> str:
        return f"compensation {self.step.name!r}"


class Saga:
    """Records compensations in a block; runs them if the block fails or is cancelled.

    Use it through :func:`saga`. Saga blocks nest: compensations recorded in an
    inner block that ends normally pass to the enclosing one.
    """

    def __init__(self, *, parallel: bool = False) -> None:
        if not isinstance(parallel, bool):
            raise ConfigurationError(f"parallel must be a bool, not {parallel!r}")
        self.parallel = parallel
        #: Compensations that failed for good (usually :class:`keel.StepFailedError`).
        self.failures: list[Exception] = []
        #: Names of the compensation steps that completed, in the order they did.
        self.compensated: list[str] = []
        self._stack: list[Compensation] = []
        self._inflight: set[asyncio.Future[Any]] = set()
        self._state = "new"  # new -> open -> closed
        self._passed_to: Saga | None = None
        self._parent: Saga | None = None
        self._token: contextvars.Token[Saga | None] | None = None
        self._saw_cancel = False

    # --- recording -------------------------------------------------------------------
    def add(self, step: StepDef[Any, Any], /, *args: Any, **kwargs: Any) -> None:
        """Record ``step(*args, **kwargs)`` as a compensation of what came before.

        For undoing something that is not a step with ``compensate=``, or to
        record the undo *before* a step whose failure may leave a partial effect.
        """
        if not isinstance(step, StepDef):
            raise ConfigurationError(
                f"Saga.add() takes a @keel.step as the compensation, not {step!r}"
            )
        if self._state != "open":
            raise WorkflowError("Saga.add() is for an open saga block (async with keel.saga())")
        # Checked now, at the call site, rather than when the compensation runs.
        codec.encode_args(step.fn, args, kwargs, what=f"compensation {step.name!r}")
        self._target()._stack.append(Compensation(step, args, dict(kwargs)))

    def _track(self, future: asyncio.Future[Any], make: Callable[[Any], Compensation]) -> None:
        """A step with a compensation was issued in this block: record the
        compensation once the step completes."""
        self._inflight.add(future)

        def done(fut: asyncio.Future[Any]) -> None:
            self._inflight.discard(fut)
            if not fut.cancelled() and fut.exception() is None:
                target = self._target()
                if target._state != "closed":
                    target._stack.append(make(fut.result()))

        future.add_done_callback(done)

    def _target(self) -> Saga:
        saga = self
        while saga._passed_to is not None:
            saga = saga._passed_to
        return saga

    # --- the block ---------------------------------------------------------------------
    async def __aenter__(self) -> Saga:
        if current_execution() is None:
            raise WorkflowError("keel.saga() can only be used inside a workflow")
        if self._state != "new":
            raise WorkflowError("a Saga is used for one block only; make a new one")
        self._state = "open"
        self._parent = _current_saga.get()
        self._token = _current_saga.set(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._token is not None
        reset_var(_current_saga, self._token)
        if exc is None:
            if self._parent is not None and self._parent._state == "open":
                # Committed as part of the enclosing block: it undoes them too.
                parent = self._parent
                parent._stack.extend(self._stack)
                parent._inflight |= self._inflight
                self._stack = []
                self._passed_to = parent
            self._state = "closed"
            return
        if not isinstance(exc, Exception | WorkflowCancelled):
            self._state = "closed"
            return  # eviction (WorkflowSuspended) and the like: nothing to undo
        try:
            await self._run_all()
        finally:
            self._state = "closed"
        for failure in self.failures:
            exc.add_note(f"keel saga: {failure}")
        if self._cancel_waiting() and not isinstance(exc, WorkflowCancelled):
            raise WorkflowCancelled() from exc

    async def compensate(self) -> None:
        """Run the compensations recorded so far now, and forget them.

        For undoing on a decision rather than an exception; failures go to
        :attr:`failures` as usual.
        """
        if self._state != "open":
            raise WorkflowError("Saga.compensate() is for an open saga block")
        await self._run_all()
        if self._cancel_waiting():
            raise WorkflowCancelled()

    # --- running compensations -----------------------------------------------------------
    async def _run_all(self) -> None:
        # Shielded: a cancel request must not discard compensations; and steps
        # run as compensations are not themselves recorded by any saga.
        token = _current_saga.set(None)
        try:
            with shielded():
                while True:
                    await self._settle_inflight()
                    if not self._stack:
                        return
                    if self.parallel:
                        batch, self._stack = self._stack[::-1], []
                        await asyncio.gather(*(self._run_one(c) for c in batch))
                    else:
                        await self._run_one(self._stack.pop())
        finally:
            reset_var(_current_saga, token)

    async def _settle_inflight(self) -> None:
        """Wait for steps of the block still running (e.g. beside a failed one in
        a ``gather``): if they complete, they must be undone too."""
        while self._inflight:
            waiting = list(self._inflight)
            await asyncio.wait(waiting)
            for fut in waiting:
                self._inflight.discard(fut)
                err = None if fut.cancelled() else fut.exception()
                if isinstance(err, WorkflowSuspended):
                    raise err  # the execution is being evicted: stop here
                if isinstance(err, WorkflowCancelled):
                    self._saw_cancel = True  # surfaced again once compensation is done

    async def _run_one(self, comp: Compensation) -> None:
        try:
            await comp.step(*comp.args, **comp.kwargs)
        except Exception as exc:  # recorded; the other compensations still run
            self.failures.append(exc)
        else:
            self.compensated.append(comp.step.name)

    def _cancel_waiting(self) -> bool:
        """Whether a cancel request arrived during compensation and must surface now."""
        execution = current_execution()
        deferred = execution is not None and execution.take_deferred_cancel()
        seen, self._saw_cancel = self._saw_cancel, False
        return deferred or seen


def saga(*, parallel: bool = False) -> Saga:
    """A saga block: ``async with keel.saga() as saga: ...``.

    Steps declared with ``@keel.step(compensate=undo)`` that complete inside
    the block record ``undo``; :meth:`Saga.add` records any step call. If an
    exception or :class:`keel.WorkflowCancelled` leaves the block, the recorded
    compensations run newest first (``parallel=True``: all at once), each a
    journaled step with its own retry policy; failures are collected in
    :attr:`Saga.failures` (and noted on the error) without stopping the
    others; then the error is re-raised.
    """
    return Saga(parallel=parallel)


def track(step: StepDef[Any, Any], future: asyncio.Future[Any], args: Any, kwargs: Any) -> None:
    """``step`` (which has a compensation) was issued: record it in the open saga."""
    current = _current_saga.get()
    if current is None or current._state != "open":
        return
    undo = step.compensate
    assert undo is not None
    wanted = by_name_params(undo.fn)
    bound = step.codec.signature.bind(*args, **kwargs)
    bound.apply_defaults()
    given = {name: value for name, value in bound.arguments.items() if name in wanted}

    def make(result: Any) -> Compensation:
        call = dict(given)
        if "result" in wanted:
            call["result"] = result
        return Compensation(undo, (), call)

    current._track(future, make)
