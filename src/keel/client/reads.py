"""Reading runs: one run, pages of runs, counts, steps, history, versions."""

from __future__ import annotations

import builtins
from collections.abc import Collection, Iterable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from keel.client.base import ClientBase
from keel.client.filters import workflow_names
from keel.client.records import HistoryEvent, RunInfo, RunList, utc_datetime
from keel.core import names
from keel.core.events import CommandId, plain
from keel.core.fold import CommandView, fold
from keel.core.states import RunState
from keel.errors import (
    ConfigurationError,
    RunNotFoundError,
)
from keel.store.base import RunRecord, WorkerVersion


class ReadsMixin(ClientBase):
    """:class:`~keel.client.Client` methods that read runs."""

    # --- inspection -----------------------------------------------------------------------------
    async def get(self, run_id: str) -> RunInfo:
        """One run's state; raises :class:`RunNotFoundError`."""
        names.text(run_id, "run_id")
        await self.open()
        rec = await self.store.reads.get_run(run_id)
        if rec is None:
            raise RunNotFoundError(run_id)
        forks = tuple(f.run_id for f in await self.store.admin.forks(run_id))
        return replace(RunInfo.from_record(rec), waiting=await self.waiting(rec), forks=forks)

    async def waiting(self, run: RunRecord) -> str | None:
        """Why no worker takes ``run``: ``"no worker has version <v> of <workflow>
        (live versions: ...)"`` when no live worker registered its version (see
        :meth:`versions`); ``None`` if one did, or the run ended or is held."""
        if run.state.is_terminal:
            return None
        return _waiting(
            run, await self.store.workers.list_versions(live=True), await self.store.now()
        )

    async def versions(self, *, live: bool = True) -> builtins.list[WorkerVersion]:
        """The ``(workflow, version)`` pairs workers registered, one row per worker
        (by workflow, version, worker); ``live``: only workers seen lately (a
        worker refreshes its rows every heartbeat; they stay live a lease TTL)."""
        if not isinstance(live, bool):
            raise TypeError(f"live must be a bool, not {live!r}")
        await self.open()
        return await self.store.workers.list_versions(live=live)

    async def list(
        self,
        *,
        workflow: str | Iterable[str] | None = None,
        state: RunState | str | Iterable[RunState | str] | None = None,
        limit: int = 50,
        cursor: str | None = None,
        since: datetime | timedelta | float | None = None,
        until: datetime | timedelta | float | None = None,
        parent_run_id: str | None = None,
    ) -> RunList:
        """Runs, newest first, optionally filtered; paginate with ``cursor``.

        ``workflow`` and ``state`` take one value or several (runs of any of
        them; an empty collection filters nothing, like ``None``).
        ``since``/``until`` bound the creation time (``since <= t < until``):
        an aware ``datetime``, epoch seconds, or a ``timedelta`` back from the
        database's clock. ``parent_run_id`` lists a run's children.
        """
        workflows = workflow_names(workflow)
        names.optional_text(cursor, "cursor")
        await self.open()
        where = await self._run_filter(workflows, state, since, until, parent_run_id)
        page = await self.store.reads.list_runs(limit=limit, cursor=cursor, **where)
        live: builtins.list[WorkerVersion] = []
        now = 0.0
        if any(not r.state.is_terminal for r in page.runs):  # one look for the whole page
            live, now = await self.store.workers.list_versions(live=True), await self.store.now()
        infos = [replace(RunInfo.from_record(r), waiting=_waiting(r, live, now)) for r in page.runs]
        return RunList(infos, page.next_cursor)

    async def count(
        self,
        *,
        workflow: str | Iterable[str] | None = None,
        state: RunState | str | Iterable[RunState | str] | None = None,
        since: datetime | timedelta | float | None = None,
        until: datetime | timedelta | float | None = None,
        parent_run_id: str | None = None,
    ) -> int:
        """How many runs :meth:`list` with the same filters selects (over all pages)."""
        workflows = workflow_names(workflow)
        await self.open()
        where = await self._run_filter(workflows, state, since, until, parent_run_id)
        return await self.store.reads.count_runs(**where)

    async def _run_filter(
        self,
        workflows: str | tuple[str, ...] | None,
        state: RunState | str | Iterable[RunState | str] | None,
        since: datetime | timedelta | float | None,
        until: datetime | timedelta | float | None,
        parent_run_id: str | None,
    ) -> dict[str, Any]:
        """The store's filter keywords; the store checks the values (ConfigurationError)."""
        # One value or several; the store checks them (and the times) alike.
        states = state if state is None or isinstance(state, str) else tuple(state)
        names.optional_text(parent_run_id, "parent_run_id")
        return {
            "workflow": workflows,
            "state": states,
            "since": await self._epoch("since", since),
            "until": await self._epoch("until", until),
            "parent_run_id": parent_run_id,
        }

    async def _epoch(self, name: str, when: datetime | timedelta | float | None) -> float | None:
        """A time filter as epoch seconds; a ``timedelta`` counts back from the store's clock."""
        if isinstance(when, timedelta):
            return await self.store.now() - when.total_seconds()
        if isinstance(when, datetime):
            if when.tzinfo is None or when.utcoffset() is None:
                raise ConfigurationError(f"{name}: give a timezone-aware datetime, not {when!r}")
            return when.timestamp()
        return when  # None, or epoch seconds the store checks

    async def steps(self, run_id: str) -> builtins.list[CommandView]:
        """Each command of the run (steps, sleeps, signal waits, children, ...) in
        the order it was first journaled, with its status, value (encoded JSON),
        error, attempts and times, folded from the journal (no workflow code
        runs). Sort by ``last_seq`` for the order commands ended in. A graph
        run's nodes: :meth:`nodes`."""
        rec = await self._record(run_id)
        view = fold(await self.store.reads.history(rec.run_id))
        return [] if view is None else builtins.list(view.commands.values())

    async def history(self, run_id: str) -> builtins.list[HistoryEvent]:
        """The run's journal, decoded; raises :class:`RunNotFoundError`."""
        names.text(run_id, "run_id")
        await self.open()
        if await self.store.reads.get_run(run_id) is None:
            raise RunNotFoundError(run_id)
        events = []
        for rec in await self.store.reads.history(run_id):
            kind = name = None
            if rec.command:
                try:
                    cid = CommandId.parse(rec.command)
                    kind, name = cid.kind.value, cid.name
                except ValueError:
                    pass
            events.append(
                HistoryEvent(
                    seq=rec.seq,
                    type=rec.type,
                    command=rec.command,
                    kind=kind,
                    name=name,
                    data=plain(rec.type, rec.data),
                    created_at=utc_datetime(rec.created_at),
                )
            )
        return events


def _waiting(run: RunRecord, live: Collection[WorkerVersion], now: float) -> str | None:
    """The reason of :meth:`Client.waiting`, from the live versions read at ``now``."""
    if run.state.is_terminal:
        return None
    if run.state is RunState.RUNNING and (run.lease_expires_at or 0) >= now:
        return None  # its holder has the version
    if any(v.workflow == run.workflow and v.version == run.version for v in live):
        return None
    others = sorted({v.version for v in live if v.workflow == run.workflow})
    return (
        f"no worker has version {run.version} of {run.workflow} "
        f"(live versions: {', '.join(others) or 'none'})"
    )
