"""The runs list's filters, read from and written back to the URL (so a view
can be bookmarked, shared and reloaded)."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TypedDict
from urllib.parse import urlencode

from starlette.datastructures import QueryParams

from keel.core.states import RunState
from keel.store.base import RUN_SORTS, RunSort


class Where(TypedDict):
    """The run filter arguments of ``store.reads.list_runs`` and ``count_runs``."""

    workflow: str | None
    state: list[RunState] | None
    since: float | None
    until: float | None
    parent_run_id: str | None


PAGE_SIZES = (25, 50, 100, 200)
_AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class BadFilter(ValueError):
    """A filter in the URL that cannot be read; the message says which."""


@dataclass(frozen=True, slots=True)
class RunQuery:
    """What the runs page shows: filters, order, page."""

    run_id: str = ""
    workflow: str = ""
    states: tuple[RunState, ...] = ()
    since: str = ""  # as typed: ISO 8601 (UTC when naive) or an age such as 2h, 7d
    until: str = ""
    parent: str = ""
    sort: RunSort = "created"  # see store.reads.list_runs; "ended" lists ended runs only
    oldest_first: bool = False  # ascending: oldest first, A to Z
    cursor: str = ""
    limit: int = 50

    @classmethod
    def parse(cls, params: QueryParams) -> RunQuery:
        """The query of a URL's parameters; :class:`BadFilter` on a bad value."""
        states = []
        for value in params.getlist("state"):
            if not value:
                continue
            try:
                states.append(RunState(value))
            except ValueError:
                raise BadFilter(f"unknown state {value!r}") from None
        try:
            limit = int(params.get("limit") or 50)
        except ValueError:
            raise BadFilter(f"page size must be a number, not {params.get('limit')!r}") from None
        if limit not in PAGE_SIZES:
            raise BadFilter(f"page size must be one of {', '.join(map(str, PAGE_SIZES))}")
        sort = params.get("sort") or "created"
        if sort not in RUN_SORTS:
            raise BadFilter(f"unknown sort {sort!r} (one of: {', '.join(RUN_SORTS)})")
        return cls(
            run_id=params.get("id", "").strip(),
            workflow=params.get("workflow", "").strip(),
            states=tuple(dict.fromkeys(states)),
            since=params.get("since", "").strip(),
            until=params.get("until", "").strip(),
            parent=params.get("parent", "").strip(),
            sort=sort,  # type: ignore[arg-type]
            # "oldest": links from before other sorts than creation time.
            oldest_first=params.get("order") in ("asc", "oldest"),
            cursor=params.get("cursor", "").strip(),
            limit=limit,
        )

    def where(self, now: float) -> Where:
        """The ``store.reads.list_runs`` filter arguments (``now``: the store clock)."""
        return {
            "workflow": self.workflow or None,
            "state": list(self.states) or None,
            "since": parse_when(self.since, now, "since"),
            "until": parse_when(self.until, now, "until"),
            "parent_run_id": self.parent or None,
        }

    def params(self, **changes: object) -> str:
        """This query (with ``changes``) as URL parameters, defaults left out."""
        q = replace(self, **changes)  # type: ignore[arg-type]
        pairs: list[tuple[str, str]] = []
        for key, value in (
            ("id", q.run_id),
            ("workflow", q.workflow),
            ("since", q.since),
            ("until", q.until),
            ("parent", q.parent),
        ):
            if value:
                pairs.append((key, value))
        pairs += [("state", s.value) for s in q.states]
        if q.sort != "created":
            pairs.append(("sort", q.sort))
        if q.oldest_first:
            pairs.append(("order", "asc"))
        if q.limit != 50:
            pairs.append(("limit", str(q.limit)))
        if q.cursor:
            pairs.append(("cursor", q.cursor))
        return urlencode(pairs)

    def sort_params(self, column: RunSort) -> str:
        """The URL a click on ``column``'s header goes to: the other direction of
        the current sort, or that column's sort (names A to Z, times newest
        first), from the first page."""
        if column == self.sort:
            return self.params(oldest_first=not self.oldest_first, cursor="")
        return self.params(sort=column, oldest_first=column in ("workflow", "state"), cursor="")

    def arrow(self, column: RunSort) -> str:
        """▲ (ascending) or ▼ on the sorted column's header; nothing on the others."""
        if column != self.sort:
            return ""
        return "▲" if self.oldest_first else "▼"

    @property
    def filtered(self) -> bool:
        return bool(
            self.run_id or self.workflow or self.states or self.since or self.until or self.parent
        )


def parse_when(text: str, now: float, what: str) -> float | None:
    """Epoch seconds of ``text``: ISO 8601 (UTC when it names no zone) or an age
    before ``now`` (``90s``, ``15m``, ``2h``, ``7d``, ``1w``); ``None`` for empty."""
    if not text:
        return None
    age = _AGE.match(text)
    if age:
        return now - float(age[1]) * _SECONDS[age[2]]
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise BadFilter(
            f"{what}: {text!r} is neither a time (2026-01-31T12:00) nor an age (2h, 7d)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()
