"""Selecting runs of a store for the replay checker: filtered, newest first, a page at a time."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable
from datetime import datetime, timedelta

from keel.client import Client
from keel.core.states import RunState
from keel.store.base import RunRecord
from keel.store.ports import Store

PAGE_SIZE = 100  # runs per list_runs call: bounds what a caller holds at once


async def iter_runs(
    store: Store | Client,
    *,
    workflow: str | Iterable[str] | None = None,
    state: RunState | str | Iterable[RunState | str] | None = None,
    since: datetime | timedelta | float | None = None,
    limit: int | None = None,
    page_size: int = PAGE_SIZE,
) -> AsyncGenerator[RunRecord, None]:
    """Runs of an open store, newest first, read ``page_size`` at a time.

    ``workflow`` and ``state`` take one value or several; ``since`` keeps runs
    created at or after a time (an aware ``datetime``, epoch seconds, or a
    ``timedelta`` back from the store's clock); ``limit`` caps how many.
    """
    st = await open_source(store)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    after = await _since(st, since)
    names: list[str | None] = list(dict.fromkeys(_many(workflow))) or [None]
    states: list[RunState | None] = list(dict.fromkeys(_states(state))) or [None]
    size = min(page_size, limit) if limit is not None else page_size
    streams = [_pages(st, w, s, after, size) for w in names for s in states]
    try:
        # Each stream is newest first; merging by (created_at, run_id), the
        # stores' own order, keeps the whole newest first and the limit global.
        heads: dict[int, RunRecord] = {}
        for i, stream in enumerate(streams):
            head = await anext(stream, None)
            if head is not None:
                heads[i] = head
        count = 0
        while heads:
            i = max(heads, key=lambda k: (heads[k].created_at, heads[k].run_id))
            yield heads[i]
            count += 1
            if count == limit:
                return  # before reading on: the next head may need another page
            head = await anext(streams[i], None)
            if head is None:
                del heads[i]
            else:
                heads[i] = head
    finally:
        for stream in streams:
            await stream.aclose()


async def _pages(
    store: Store, workflow: str | None, state: RunState | None, after: float | None, size: int
) -> AsyncGenerator[RunRecord, None]:
    cursor = None
    while True:
        page = await store.reads.list_runs(
            workflow=workflow, state=state, limit=size, cursor=cursor
        )
        for run in page.runs:
            if after is not None and run.created_at < after:
                return  # newest first: every later run is older still
            yield run
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


async def open_source(store: Store | Client) -> Store:
    """The store behind ``store``; a client is opened first (a store must be open already)."""
    if isinstance(store, Client):
        await store.open()
        return store.store
    return store


def _many(value: str | Iterable[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _states(value: RunState | str | Iterable[RunState | str] | None) -> list[RunState]:
    items: list[RunState | str]
    if value is None:
        items = []
    elif isinstance(value, str):  # a RunState is a str too
        items = [value]
    else:
        items = list(value)
    try:
        return [RunState(s) for s in items]
    except ValueError:
        valid = ", ".join(s.value for s in RunState)
        raise ValueError(f"unknown run state in {items!r} (one of: {valid})") from None


async def _since(store: Store, since: datetime | timedelta | float | None) -> float | None:
    if since is None:
        return None
    if isinstance(since, timedelta):
        return await store.now() - since.total_seconds()  # the store's clock, as everywhere
    if isinstance(since, datetime):
        if since.tzinfo is None:
            raise ValueError("since: give a timezone-aware datetime")
        return since.timestamp()
    return float(since)
