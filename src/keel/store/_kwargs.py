"""The keyword arguments of the port's longer methods, declared once for every backend.

A backend takes them as ``**kwargs: Unpack[...]``; mypy checks such a method
against its protocol in :mod:`keel.store.ports` keyword by keyword, as if each
were spelled out, so the contract stays the one in ports.py.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import NotRequired, TypedDict

from keel.core.states import RunState
from keel.store._checks import run_filter
from keel.store.base import NewRun, RunFilter


class RunWhere(TypedDict, total=False):
    """The filters of ``reads.list_runs`` and ``reads.count_runs`` (see :class:`RunFilter`)."""

    workflow: str | Collection[str] | None
    state: RunState | Collection[RunState] | None
    since: float | None
    until: float | None
    parent_run_id: str | None


def where_filter(where: RunWhere) -> RunFilter:
    """The checked :class:`RunFilter` of ``where``."""
    return run_filter(
        where.get("workflow"),
        where.get("state"),
        where.get("since"),
        where.get("until"),
        where.get("parent_run_id"),
    )


class ClaimArgs(TypedDict):
    """How ``runs.claim`` claims: how many runs, for how long, of which versions."""

    limit: int
    ttl: float
    versions: NotRequired[Collection[tuple[str, str]] | None]


class Tick(TypedDict):
    """The tick ``schedules.fire`` handles: the due time read, the tick, the next
    due time, and the run to start (``None``: a skipped tick)."""

    expected: float
    tick: float
    next_fire_at: float | None
    run: NewRun | None


class Registration(TypedDict):
    """Where a worker of ``workers.register_versions`` runs, and for how long it counts as live."""

    host: str
    pid: int
    live_for: float
