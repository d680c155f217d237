"""Starting runs, waiting for their results, signalling and cancelling them."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, ParamSpec, TypeVar, overload

from keel.client.base import ClientBase
from keel.client.filters import check_workflow
from keel.client.ids import new_run_id
from keel.client.records import RunHandle
from keel.core import codec, names
from keel.core.events import EventType, RunCancelled, encode_data, run_started
from keel.core.inputs import check_input
from keel.core.states import RunState
from keel.errors import (
    ConfigurationError,
    ResultTimeoutError,
    RunCancelledError,
    RunFailedError,
    RunNotFoundError,
    RunTerminatedError,
    SerializationError,
)
from keel.observe import tracing
from keel.store.base import Claimed, NewEvent, NewRun
from keel.workflow.definitions import WorkflowDef

P = ParamSpec("P")
R = TypeVar("R")


class RunsMixin(ClientBase):
    """:class:`~keel.client.Client` methods that start and drive runs."""

    # --- starting ---------------------------------------------------------------------------
    @overload
    async def start(
        self,
        workflow: WorkflowDef[P, R],
        *args: Any,
        run_id: str | None = None,
        **kwargs: Any,
    ) -> RunHandle[R]: ...

    @overload
    async def start(
        self, workflow: str, *args: Any, run_id: str | None = None, **kwargs: Any
    ) -> RunHandle[Any]: ...

    async def start(
        self,
        workflow: WorkflowDef[Any, Any] | str,
        *args: Any,
        run_id: str | None = None,
        **kwargs: Any,
    ) -> RunHandle[Any]:
        """Start a run of ``workflow`` with these arguments.

        A name starts the current version of that workflow (a
        :class:`WorkflowDef` starts its own version); the run records it and
        is resumed only by that version. ``run_id`` is an idempotency key: if
        a run with that id exists, its handle is returned (``handle.created``
        is ``False``) and nothing runs twice. Arguments are checked here, and
        nothing is written if they are bad: ``TypeError`` if they do not fit the
        signature, :class:`SerializationError` if one cannot be encoded,
        :class:`InvalidInputError` if one does not decode into its annotated type
        (a worker would fail the run). A workflow given by name must be
        registered in this process (its current version is what starts), so its
        annotations are always known here.
        """
        check_workflow(workflow, "start")
        run_id = new_run_id() if run_id is None else names.name(run_id, "run_id")
        wf = self.registry.get(workflow) if isinstance(workflow, str) else workflow
        if not isinstance(wf, WorkflowDef):
            raise ConfigurationError(f"start() needs a @keel.workflow or its name, not {wf!r}")
        try:
            data = codec.encode_args(wf.fn, args, kwargs, what=f"workflow {wf.name!r}")
        except TypeError as exc:
            if isinstance(exc, SerializationError):
                raise
            raise TypeError(f"bad arguments for workflow {wf.name!r}: {exc}") from None
        # Decoded as the worker will decode it: a value that does not fit its
        # annotation is refused here, before the run exists (InvalidInputError).
        check_input(wf.codec, data, wf.name)
        with tracing.start_workflow(run_id, wf.name) as parent:  # its spans' trace
            first = run_started(wf.name, wf.version, data, traceparent=parent)
            started = NewEvent(EventType.RUN_STARTED.value, None, encode_data(first))
            new = NewRun(run_id, wf.name, wf.version, data, started)
            await self.open()  # only now: bad input creates nothing, not even a file
            worker = self.worker
            local = worker is not None and worker.has_capacity()
            record, lease, created = await self.store.runs.create(
                new,
                lease_owner=worker.owner if local and worker else None,
                lease_ttl=worker.lease_ttl if worker else 30.0,
            )
            if created and lease is not None and worker is not None:
                worker.adopt(Claimed(lease, record))
        return RunHandle(self._client, record.run_id, record.workflow, created)

    # --- waiting ------------------------------------------------------------------------------
    async def result(self, run_id: str, timeout: float | None = None) -> Any:
        """Wait for the run to finish and return its result.

        A run that continued-as-new is followed to the end of its chain: the
        result is the last run's. Raises :class:`RunFailedError`,
        :class:`RunCancelledError`, :class:`RunNotFoundError`, or
        :class:`ResultTimeoutError` after ``timeout`` seconds (``None`` waits
        forever).
        """
        names.text(run_id, "run_id")
        await self.open()
        deadline = None if timeout is None else time.monotonic() + timeout
        local = self.worker.finished_waiter(run_id) if self.worker is not None else None
        if local is not None:
            # Our own worker is driving the run: it hands over the outcome, no reads.
            try:
                finished = await asyncio.wait_for(local, timeout)
            except TimeoutError:
                raise ResultTimeoutError(
                    f"run {run_id!r} did not finish within {timeout:g}s"
                ) from None
            if finished is not None and finished.state is not RunState.CONTINUED:
                return self._outcome(
                    run_id,
                    finished.workflow,
                    finished.version,
                    finished.state,
                    finished.result,
                    finished.error,
                )
        poll = 0.005
        while True:
            rec = await self.store.reads.get_run(run_id)
            if rec is None:
                raise RunNotFoundError(run_id)
            if rec.state is RunState.CONTINUED and rec.continued_to is not None:
                run_id = rec.continued_to  # follow the chain to its live tip
                continue
            if rec.state.is_terminal:
                return self._outcome(
                    rec.run_id, rec.workflow, rec.version, rec.state, rec.result, rec.error
                )
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise ResultTimeoutError(
                    f"run {run_id!r} did not finish within {timeout:g}s (state: {rec.state})"
                )
            wait = poll if remaining is None else min(poll, remaining)
            fut = self.worker.finished_waiter(run_id) if self.worker is not None else None
            if fut is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(fut, timeout=max(wait, 0.05))
            else:
                await self.store.changes.wait(wait)
            poll = min(poll * 2, 0.25)

    def _outcome(
        self,
        run_id: str,
        workflow: str,
        version: str,
        state: RunState,
        result: bytes | None,
        error: bytes | None,
    ) -> Any:
        if state is RunState.COMPLETED:
            # Decoded with the result type of the version that ran, if known here.
            wf = self.registry.find(workflow, version) or self.registry.find(workflow)
            result_type = wf.result_type if wf is not None else Any
            return codec.decode(result or b"null", result_type, what=f"result of run {run_id!r}")
        if state is RunState.CANCELLED:
            raise RunCancelledError(run_id)
        if state is RunState.TERMINATED:
            raise RunTerminatedError(run_id)
        err = codec.decode(error) if error else {}
        raise RunFailedError(
            run_id,
            str(err.get("type", "unknown")),
            str(err.get("message", "")),
            str(err.get("traceback", "")),
        )

    # --- control ------------------------------------------------------------------------------
    async def signal(
        self, run_id: str, name: str, payload: Any = None, *, delivery_id: str | None = None
    ) -> bool:
        """Send signal ``name`` with ``payload`` to a run; buffered until awaited.

        A run that continued-as-new forwards it to the live run of its chain.
        ``delivery_id`` makes a retry safe: a signal with the same id sent to
        the run's chain before (consumed or not, before or after a
        continue-as-new) makes this call a no-op. Returns ``True`` if the
        signal was delivered, ``False`` if it was such a repeat.

        Raises :class:`RunNotFoundError`, :class:`RunFinishedError`, and
        :class:`RunCancellingError` when the run has a pending cancel request
        (the workflow would never see it); nothing is written then.
        """
        names.text(run_id, "run_id")
        names.name(name, "signal name", hash_ok=False)
        if delivery_id is not None:
            names.name(delivery_id, "delivery_id")
        data = codec.encode(payload, what=f"payload of signal {name!r}")
        await self.open()
        with tracing.signal_send(run_id, name):
            sid = await self.store.mailbox.send(run_id, name, data, delivery_id=delivery_id)
        return sid is not None

    async def cancel(self, run_id: str) -> RunState:
        """Cancel a run; returns its state afterwards (a run that continued-as-new:
        the live run of its chain is cancelled).

        A run that has not started any work is ``cancelled`` at once. Otherwise
        the request is stored and the state is unchanged: the worker holding
        the run (or the next one to claim it) raises :class:`keel.WorkflowCancelled`
        in the workflow, lets its cleanup and compensations run, and ends it
        ``cancelled``.
        """
        names.text(run_id, "run_id")
        await self.open()
        event = NewEvent(
            EventType.RUN_CANCELLED.value,
            None,
            encode_data(RunCancelled(reason="cancelled by client")),
        )
        state = await self.store.runs.request_cancel(run_id, event)
        if self.worker is not None:
            # A continued run: the request went to its chain's live run.
            rec = await self.store.reads.get_run(run_id)
            while rec is not None and rec.continued_to is not None:
                run_id = rec.continued_to
                rec = await self.store.reads.get_run(run_id)
            self.worker.poke_cancel(run_id)
        return state
