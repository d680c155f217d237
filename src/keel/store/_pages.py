"""How every backend lists runs: filters, cursors and keyset pages in each sort.

The backends keep their own SQL (a query per sort, walking its index); what is
here is the part they share: the filter's checks, what a cursor holds and the
parameters of the next page.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Collection

from keel.core.states import RunState
from keel.errors import ConfigurationError
from keel.store.base import RUN_SORTS, RunFilter, RunPage, RunRecord, RunSort, RunWhere

MAX_PAGE = 1000


def check_limit(limit: int) -> None:
    """Page sizes of ``list_runs`` are 1..MAX_PAGE."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise ConfigurationError(f"list_runs limit must be between 1 and {MAX_PAGE}, not {limit!r}")


def run_filter(
    workflow: str | Collection[str] | None,
    state: RunState | Collection[RunState] | None,
    since: float | None,
    until: float | None,
    parent_run_id: str | None,
) -> RunFilter:
    """The :class:`RunFilter` of ``list_runs``/``count_runs`` arguments, checked."""
    workflows = _names("workflow", workflow)
    if state is None:
        states: tuple[RunState, ...] = ()
    else:
        items = [state] if isinstance(state, str) else list(state)  # a RunState is a str
        try:
            states = tuple(dict.fromkeys(RunState(s) for s in items))
        except ValueError:
            valid = ", ".join(s.value for s in RunState)
            raise ConfigurationError(f"unknown run state in {items!r} (one of: {valid})") from None
    for name, bound in (("since", since), ("until", until)):
        if bound is not None and (
            isinstance(bound, bool)
            or not isinstance(bound, int | float)
            or not math.isfinite(bound)
        ):
            raise ConfigurationError(
                f"list_runs {name} must be finite epoch seconds, not {bound!r}"
            )
    if parent_run_id is not None and not isinstance(parent_run_id, str):
        raise ConfigurationError(f"list_runs parent_run_id must be a str, not {parent_run_id!r}")
    return RunFilter(
        workflows,
        states,
        None if since is None else float(since),
        None if until is None else float(until),
        parent_run_id,
    )


def where_filter(where: RunWhere) -> RunFilter:
    """:func:`run_filter` of the filter arguments taken as ``**where``."""
    return run_filter(
        where.get("workflow"),
        where.get("state"),
        where.get("since"),
        where.get("until"),
        where.get("parent_run_id"),
    )


def _names(what: str, value: str | Collection[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else list(value)
    if not all(isinstance(item, str) for item in items):
        raise ConfigurationError(f"list_runs {what} must be a str or strs, not {value!r}")
    return tuple(dict.fromkeys(items))


def encode_cursor(run: RunRecord) -> str:
    """Opaque keyset cursor: the (created_at, run_id) of the last run of a page."""
    raw = json.dumps([run.created_at, run.run_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """Inverse of :func:`encode_cursor`; ``ConfigurationError`` on anything else."""
    try:
        created_at, run_id = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
    except (ValueError, TypeError, binascii.Error, UnicodeEncodeError):
        raise ConfigurationError(f"invalid list_runs cursor {cursor!r}") from None
    if not isinstance(created_at, int | float) or not isinstance(run_id, str):
        raise ConfigurationError(f"invalid list_runs cursor {cursor!r}")
    return float(created_at), run_id


def keyset(
    limit: int, cursor: str | None, *, oldest_first: bool = False, where: RunFilter | None = None
) -> dict[str, object]:
    """The keyset parameters of one ``list_runs`` page in SQL: the runs before
    ``cursor`` (after it when ``oldest_first``; all of them without one),
    ``limit + 1`` at most (the extra one says another page exists; see
    :func:`page_of`).

    ``low``/``high`` bound ``created_at`` (inclusive) by the cursor and
    ``where``'s time range as plain comparisons, which the databases use as the
    index range (a row-value comparison alone, or ``:since IS NULL OR ...``,
    would make SQLite walk the index from its newest entry).
    """
    check_limit(limit)
    mark = decode_cursor(cursor) if cursor else None
    low = where.since if where is not None and where.since is not None else -math.inf
    high = where.until if where is not None and where.until is not None else math.inf
    if oldest_first:
        bound = mark or (-math.inf, "")
        low = max(low, bound[0])
    else:
        bound = mark or (math.inf, "")
        high = min(high, bound[0])
    return {
        "before_created": bound[0],
        "before_run_id": bound[1],
        "low": low,
        "high": high,
        "limit": limit + 1,
    }


def page_of(runs: list[RunRecord], limit: int, sort: RunSort = "created") -> RunPage:
    """A page from up to ``limit + 1`` runs (the extra one only says there is more)."""
    if len(runs) > limit:
        runs = runs[:limit]
        last = runs[-1]
        if sort == "created":
            return RunPage(runs, encode_cursor(last))
        raw = json.dumps([sort, *sort_key(sort, last)], separators=(",", ":")).encode()
        return RunPage(runs, base64.urlsafe_b64encode(raw).decode("ascii"))
    return RunPage(runs, None)


# -- sorted pages ----------------------------------------------------------------------

#: Above every workflow name and state in byte order (both stores compare text
#: bytewise): the first page of a descending text sort starts below it.
_TOP = "\U0010ffff"


def check_sort(sort: object) -> RunSort:
    """``list_runs``'s ``sort``: one of :data:`~keel.store.base.RUN_SORTS`."""
    if sort not in RUN_SORTS:
        raise ConfigurationError(f"unknown sort {sort!r} (one of: {', '.join(RUN_SORTS)})")
    return sort  # type: ignore[return-value]


def sort_key(sort: RunSort, run: RunRecord) -> tuple[str | float, ...]:
    """The key ``run`` is ordered by under ``sort`` (its last part the run id)."""
    if sort == "ended":
        return (run.updated_at, run.run_id)
    if sort == "workflow":
        return (run.workflow, run.created_at, run.run_id)
    if sort == "state":
        return (run.state.value, run.created_at, run.run_id)
    return (run.created_at, run.run_id)


def sorts_out_every_run(sort: RunSort, where: RunFilter) -> bool:
    """Whether ``sort`` lists no run under ``where`` whatever is stored: sorted by
    end time, only ended runs are listed, so a filter of live states leaves none
    (answered without walking the index of ended runs to its end)."""
    return sort == "ended" and bool(where.states) and not any(s.is_terminal for s in where.states)


def sorted_mark(sort: RunSort, cursor: str) -> tuple[str | float, ...]:
    """The :func:`sort_key` a cursor of ``sort`` (from :func:`page_of`) holds;
    ``ConfigurationError`` for anything else, a cursor of another sort too."""
    bad = ConfigurationError(f"invalid list_runs cursor {cursor!r} for sort {sort!r}")
    try:
        found = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
    except (ValueError, TypeError, binascii.Error, UnicodeEncodeError):
        raise bad from None
    text = sort in ("workflow", "state")
    if not isinstance(found, list) or len(found) != (4 if text else 3) or found[0] != sort:
        raise bad
    *name, at, run_id = found[1:]
    if not isinstance(run_id, str) or isinstance(at, bool) or not isinstance(at, int | float):
        raise bad
    if text and not isinstance(name[0], str):
        raise bad
    return (*name, float(at), run_id)


def sorted_keyset(
    sort: RunSort, limit: int, cursor: str | None, *, ascending: bool
) -> dict[str, object]:
    """The keyset parameters of one page of a ``sort`` other than ``created``:
    ``key_at`` (``ended``: the end time, else the creation time), ``key_id``, and
    ``key_text`` (``workflow``/``state``: the name), past ``cursor`` in the
    order asked; ``limit + 1`` rows at most."""
    check_limit(limit)
    if cursor:
        *name, at, run_id = sorted_mark(sort, cursor)
        text = name[0] if name else ""
    else:  # before every run (ascending) or after every run (descending)
        at, run_id = (-math.inf, "") if ascending else (math.inf, "")
        text = "" if ascending else _TOP
    return {"key_text": text, "key_at": at, "key_id": run_id, "limit": limit + 1}
