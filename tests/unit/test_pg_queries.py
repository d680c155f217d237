"""The pieces of the PostgreSQL store's queries.sql: includes, sections, and every
variant of the commit statement a turn can ask for."""

from __future__ import annotations

import itertools

import psycopg
import pytest

from keel.core.states import RunState
from keel.store.base import Lease, NewEvent, NewTask
from keel.store.ports import Continue, Finish, Suspend, Turn
from keel.store.postgres._sql import Queries
from keel.store.postgres.turns import turn_statement
from keel.testing.conformance import child_run, new_run
from tests.pg import pg_url, postgres_server  # noqa: F401  (fixtures)

PIECES = {
    "cols": "-- a comment that is dropped\na, b",
    "q": "-- the doc of q {cols} stays as it is\nSELECT {cols}\n--[x y\n, 1\n--]\n--[z\n, 2\n--]",
}


def test_a_piece_includes_others_outside_comments_and_keeps_the_asked_sections() -> None:
    q = Queries(PIECES)
    assert q["q"] == "-- the doc of q {cols} stays as it is\nSELECT a, b"
    assert q.sql("q", "y") == "-- the doc of q {cols} stays as it is\nSELECT a, b\n, 1"
    assert q.sql("q", "x", "z").endswith("SELECT a, b\n, 1\n, 2")


@pytest.mark.parametrize(
    "pieces",
    [
        {"q": "SELECT 1\n--[x\n, 2"},  # unclosed
        {"q": "--[x\n--[y\n--]"},  # nested
        {"q": "SELECT {q}"},  # includes itself
    ],
)
def test_malformed_pieces_are_refused(pieces: dict[str, str]) -> None:
    with pytest.raises(RuntimeError):
        Queries(pieces).sql("q")


def test_an_unknown_tag_is_refused() -> None:
    with pytest.raises(RuntimeError):
        Queries(PIECES).sql("q", "nope")


def _turns() -> list[Turn]:
    """A turn of every shape: one or several events, with or without a signal,
    children, tasks, and each kind of end."""
    ends = [
        None,
        Suspend(None, wake_on_signals=["s"], wake_on_tasks=["t"], wake_on_children=["c"]),
        Finish(RunState.COMPLETED, result=b"1"),
        Continue(new_run("r/continue:1")),
    ]
    event = NewEvent("e", None, b"{}")
    task = NewTask("step:t#0", "t", "q", 0, b"[]", 1)
    return [
        Turn(
            1,
            [event] * n,
            consume_signal=1 if signal else None,
            children=[child_run("r/c", "r")] if children else [],
            tasks=[task] if tasks else [],
            end=end,
        )
        for n, signal, children, tasks, end in itertools.product(
            (1, 2), (False, True), (False, True), (False, True), ends
        )
    ]


def test_every_variant_of_the_commit_statement_is_valid_sql(pg_url: str) -> None:  # noqa: F811
    lease = Lease("r", "w", 1, 0.0)
    with psycopg.connect(pg_url, autocommit=True, options="-csearch_path=keel") as conn:
        for turn in _turns():
            sql, params = turn_statement(lease, turn, "keel.changes")
            conn.execute(f"EXPLAIN {sql}", params)  # parsed, typed and planned; not run
