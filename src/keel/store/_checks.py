"""Argument checks and the list cursor, shared by every backend.

The backends keep their own SQL; what is here is the part of the contract that
is not storage: how arguments are validated and what a page cursor looks like.
"""

from __future__ import annotations

import base64
import binascii
import json

from keel.core.states import RunState
from keel.errors import ConfigurationError
from keel.store.base import RunPage, RunRecord

MAX_PAGE = 1000


def check_ttl(ttl: float) -> None:
    """Lease TTLs are positive seconds."""
    if not ttl > 0:
        raise ValueError(f"lease ttl must be positive, not {ttl!r}")


def check_limit(limit: int) -> None:
    """Page sizes of ``list_runs`` are 1..MAX_PAGE."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise ConfigurationError(f"list_runs limit must be between 1 and {MAX_PAGE}, not {limit!r}")


def check_terminal(state: RunState) -> None:
    """``finish_run`` only ends runs in a terminal state."""
    if not RunState(state).is_terminal:
        raise ValueError(f"finish_run needs a terminal state, not {state!s}")


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


def page_of(runs: list[RunRecord], limit: int) -> RunPage:
    """A page from up to ``limit + 1`` runs (the extra one only says there is more)."""
    if len(runs) > limit:
        runs = runs[:limit]
        return RunPage(runs, encode_cursor(runs[-1]))
    return RunPage(runs, None)
