"""Operator actions on runs: terminate, resume, retry, fork, bulk, prune."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import keel.operations as operations
from keel.client.base import ClientBase
from keel.client.filters import workflow_names
from keel.client.ids import fresh_run_id
from keel.client.records import RunHandle, RunInfo
from keel.core.states import RunState
from keel.errors import (
    ConfigurationError,
)


class OperatorMixin(ClientBase):
    """:class:`~keel.client.Client`'s operator actions; the CLI and the dashboard
    share their implementation, :mod:`keel.operations`."""

    # --- operator actions -------------------------------------------------------------------
    async def terminate(self, run_id: str, *, reason: str = "") -> RunInfo:
        """End a run at once in state ``terminated``; returns it afterwards.

        Unlike :meth:`cancel`, no code of the workflow runs: no cleanup, no
        compensations. In one transaction the run ends (``run_terminated`` is
        journaled with ``reason``), a worker holding it loses its lease (its next
        write is refused and its step attempts are stopped at its next
        heartbeat), its timers and signal waits are dropped (unconsumed signals
        are kept, never delivered), its open dispatched steps are deleted, its
        parent is woken, and its children are closed as a cancelled parent
        closes them ("cancel" and "wait" children are asked to cancel, the
        normal way; "abandon" ones run on). A run that continued-as-new: the
        live run of its chain is terminated. :meth:`result` of a terminated run
        raises :class:`RunTerminatedError`. Raises :class:`RunNotFoundError`,
        :class:`RunFinishedError` (it has ended already).
        """
        await self.open()
        record = await operations.terminate(self.store, run_id, reason)
        if self.worker is not None:  # our own worker stops it at once
            self.worker.poke_lost(record.run_id, "an operator terminated the run")
        return RunInfo.from_record(record)

    async def resume(
        self,
        run_id: str,
        *,
        force: bool = False,
        idle_for: float = operations.DEFAULT_IDLE_FOR,
        fire_timers: bool = False,
    ) -> RunInfo:
        """Make a parked, stuck or cancel-requested run runnable now; returns it afterwards.

        The run becomes due at once, so the next worker that has its version
        claims it (a run that continued-as-new: the live run of its chain).

        - A *parked* or waiting run (``pending``/``suspended``: parked for a
          version no worker had, or due later) is made due now. The durable
          times its journal holds (a ``keel.sleep``, a retry's backoff, a signal
          timeout) still hold: the worker replays the run and waits for them;
          ``fire_timers=True`` fires its pending ``keel.sleep`` timers now
          instead (``timer_fired`` is journaled for each, in the same
          transaction, as if the time had come), so a run sleeping far into the
          future goes on at once.
        - A *stuck* run is one a worker holds (``running``) without moving it:
          its lease has expired, or its worker's process is gone (on SQLite and
          PostgreSQL a dead worker's liveness lock is released at once, and
          resume expires its leases first), or nothing was written to it
          for ``idle_for`` seconds (default 60) although its lease is renewed
          (a step that never returns, a blocked process). Resume takes the lease
          away in one transaction: the holder's next write is refused
          (:class:`LeaseLostError`) and its step attempts are stopped, and
          another worker replays the run (a step in flight runs again: steps are
          at-least-once). A run written to more recently is refused with
          :class:`RunNotStuckError`, unless ``force=True``.
        - A *cancel request* that has not reached the workflow yet (nothing of
          it journaled) is withdrawn: the run carries on as if never cancelled.
          One the workflow already received (its cleanup is running) cannot be
          withdrawn: :class:`RunCancellingError`.

        Raises :class:`RunNotFoundError`, :class:`RunFinishedError` (it has ended:
        see :meth:`retry`).
        """
        await self.open()
        record = await operations.resume(
            self.store, run_id, force=force, idle_for=idle_for, fire_timers=fire_timers
        )
        if self.worker is not None:  # our own worker lets go of it at once
            self.worker.poke_lost(record.run_id, "an operator resumed the run")
        return RunInfo.from_record(record)

    async def retry(
        self,
        run_id: str,
        *,
        new_run_id: str | None = None,
        version: str | None = None,
        redeliver_signals: bool = True,
    ) -> RunHandle[Any]:
        """Start a new run that picks up a failed, cancelled or terminated run with the
        current code; returns its handle. The original is not changed.

        The new run's journal is a copy of the original's up to the failure, so
        everything completed before it is not run again: for a step or child
        that failed for good, up to that failure, and that step runs again from
        its first attempt; for a nondeterminism error, up to the event the code
        disagreed with; for an error of the workflow code itself, up to the end;
        for a cancelled run, up to where the request reached the workflow (its
        cleanup is not copied); for a terminated one, up to its end. A child run
        still open at that point belongs to the original, so the copy stops
        before that child started. From there the current code runs. Use
        :meth:`fork` to choose the point.

        ``version``: the workflow version the new run takes (default: the
        current one registered in this process, else the one version live
        workers run). ``redeliver_signals``: signals the original had not
        consumed before the point (consumed after it, or never) are sent to the
        new run again, in order. ``new_run_id`` (default: a new UUIDv7) names
        the new run. The links: ``RunInfo.forked_from`` / ``fork_seq`` on the new
        run, ``RunInfo.forks`` on the original (from :meth:`get`). A run that
        continued-as-new: the last run of its chain is retried.

        Steps re-run by the new run get new idempotency keys (its run id is
        new): hand external systems keys of your own if a step may have had an
        effect before it failed. Raises :class:`RunNotFoundError`,
        :class:`ForkPointError` (not failed, cancelled or terminated),
        :class:`WorkflowNotFoundError` (no version to run),
        :class:`RunExistsError` (``new_run_id`` taken); nothing is written then.
        """
        return await self._fork(run_id, None, new_run_id, version, redeliver_signals, True)

    async def fork(
        self,
        run_id: str,
        at: str | int,
        *,
        new_run_id: str | None = None,
        version: str | None = None,
        redeliver_signals: bool = True,
    ) -> RunHandle[Any]:
        """Start a new run from run ``run_id``'s journal up to ``at``, running the
        current code from there; returns its handle. The original (any state) is
        not changed and keeps running if it was.

        ``at``: a command id from the run's history (``"step:charge#0"``): that
        command and everything after it run again (what happened to it before is
        dropped: a step starts at attempt 1); or a journal seq: the events below
        it are copied. A point where a child run is still open is refused
        (:class:`ForkPointError`: the child belongs to the original). This is how
        to recover from a nondeterminism failure: fork at the command the code no
        longer asks for. The options, links and errors are :meth:`retry`'s.
        """
        return await self._fork(run_id, at, new_run_id, version, redeliver_signals, False)

    async def _fork(
        self,
        run_id: str,
        at: str | int | None,
        new_run_id: str | None,
        version: str | None,
        redeliver_signals: bool,
        retry: bool,
    ) -> RunHandle[Any]:
        await self.open()
        forked = await operations.fork(
            self.store,
            self.registry,
            run_id,
            at,
            new_run_id=fresh_run_id() if new_run_id is None else new_run_id,
            version=version,
            redeliver_signals=redeliver_signals,
            retry=retry,
        )
        return RunHandle(self._client, forked.run.run_id, forked.run.workflow, True)

    async def bulk(
        self,
        action: operations.BulkAction,
        run_ids: Iterable[str] | None = None,
        *,
        workflow: str | Iterable[str] | None = None,
        state: RunState | str | Iterable[RunState | str] | None = None,
        since: datetime | timedelta | float | None = None,
        until: datetime | timedelta | float | None = None,
        parent_run_id: str | None = None,
        reason: str = "",
        force: bool = False,
        fire_timers: bool = False,
    ) -> operations.BulkResult:
        """Apply ``action`` (``"cancel"``, ``"terminate"``, ``"resume"`` or ``"retry"``)
        to each of ``run_ids``, or, without them, to every run the filters select
        (those of :meth:`list` and :meth:`count`: count first to show how many).

        Runs are read a page at a time and each is acted on in its own
        transaction, so any number of runs can be selected; a run the action
        refuses (already ended, not stuck, not failed...) is counted in
        ``refused`` (the first 100 with the reason) and the others go on.
        ``reason`` goes with ``terminate``; ``force`` and ``fire_timers`` with ``resume``.
        """
        if action not in operations.BULK_ACTIONS:
            raise ConfigurationError(
                f"unknown bulk action {action!r} (one of: {', '.join(operations.BULK_ACTIONS)})"
            )
        filters = (workflow, state, since, until, parent_run_id)
        if run_ids is not None and any(f is not None for f in filters):
            raise ConfigurationError("bulk() takes run_ids or filters, not both")
        await self.open()
        where: dict[str, Any] = {}
        if run_ids is None:
            where = await self._client._run_filter(
                workflow_names(workflow), state, since, until, parent_run_id
            )

        async def act(run_id: str) -> Any:
            if action == "cancel":
                return await self._client.cancel(run_id)
            if action == "terminate":
                return await self.terminate(run_id, reason=reason)
            if action == "resume":
                return await self.resume(run_id, force=force, fire_timers=fire_timers)
            return await operations.fork(
                self.store,
                self.registry,
                run_id,
                None,
                new_run_id=fresh_run_id(),
                version=None,
                redeliver_signals=True,
                retry=True,
            )

        return await operations.bulk(self.store, action, act, run_ids=run_ids, where=where)

    async def prune(
        self,
        older_than: timedelta | float,
        *,
        state: RunState | str | Iterable[RunState | str] | None = None,
        dry_run: bool = False,
        batch: int = 500,
    ) -> int:
        """Delete runs that ended more than ``older_than`` (a ``timedelta`` or seconds)
        ago by the database's clock; return how many (``dry_run``: how many would be).

        Only a run that has ended (of ``state``, if given) is deleted, and only
        when every run of its continue-as-new chain ended that long ago, its
        parent has ended and none of its children is still live: a running child
        or a live chain is never touched. With a run go its journal, signals,
        dispatched steps and snapshot. Idempotency keys stay: they are shared by
        every run, and deleting one would let a repeated step act twice. Done in
        batches of ``batch`` runs, each its own transaction.
        """
        seconds = older_than.total_seconds() if isinstance(older_than, timedelta) else older_than
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds >= 0:
            raise ConfigurationError(f"older_than must be a duration >= 0, not {older_than!r}")
        states = None
        if state is not None:
            items = [state] if isinstance(state, str) else list(state)
            try:
                states = [RunState(s) for s in items]
            except ValueError:
                raise ConfigurationError(f"unknown run state in {items!r}") from None
        await self.open()
        return await operations.prune(
            self.store,
            ended_before=await self.store.now() - seconds,
            states=states,
            batch=batch,
            dry_run=dry_run,
        )
