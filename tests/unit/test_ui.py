"""The dashboard's pure parts: URL filters, the operator token's checks, the
timeline's bars, and how values are shown (nothing secret)."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import pytest
from starlette.datastructures import QueryParams
from starlette.requests import Request

from keel.core import events as ev
from keel.core.fold import fold
from keel.core.states import RunState
from keel.ui import format
from keel.ui.access import COOKIE, Access
from keel.ui.query import BadFilter, RunQuery, parse_when
from keel.ui.timeline import build


def test_a_query_round_trips_through_the_url() -> None:
    q = RunQuery.parse(
        QueryParams(
            "workflow=orders&state=failed&state=cancelled&since=2h&parent=p/1&order=oldest&limit=100"
        )
    )
    assert q.states == (RunState.FAILED, RunState.CANCELLED) and q.oldest_first
    assert RunQuery.parse(QueryParams(q.params())) == q
    assert "cursor=abc" in q.params(cursor="abc")
    assert RunQuery.parse(QueryParams("")).params() == ""
    by_state = RunQuery.parse(QueryParams("sort=state&order=asc&cursor=x"))
    assert (by_state.sort, by_state.oldest_first) == ("state", True)
    assert RunQuery.parse(QueryParams(by_state.params())) == by_state
    # A click on the sorted column turns it round; on another, sorts by it.
    assert RunQuery.parse(QueryParams(by_state.sort_params("state"))) == RunQuery(sort="state")
    assert by_state.sort_params("ended") == "sort=ended"
    assert (by_state.arrow("state"), by_state.arrow("created")) == ("▲", "")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ("state=lost", "unknown state"),
        ("limit=7", "page size"),
        ("limit=x", "page size"),
        ("sort=duration", "unknown sort"),
    ],
)
def test_bad_filters_say_what_is_wrong(params: str, message: str) -> None:
    with pytest.raises(BadFilter, match=message):
        RunQuery.parse(QueryParams(params))


def test_times_are_iso_utc_or_ages() -> None:
    now = 1_000_000.0
    assert parse_when("", now, "since") is None
    assert parse_when("90s", now, "since") == now - 90
    assert parse_when("2h", now, "since") == now - 7200
    assert parse_when("1970-01-02T00:00", now, "since") == 86400.0
    assert parse_when("1970-01-02T01:00+01:00", now, "since") == 86400.0
    with pytest.raises(BadFilter, match="until"):
        parse_when("yesterday", now, "until")
    with pytest.raises(BadFilter):
        RunQuery(since="soon").where(now)


def request(headers: dict[str, str] | None = None, cookie: str | None = None) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    if cookie is not None:
        raw.append((b"cookie", f"{COOKIE}={cookie}".encode()))
    return Request({"type": "http", "method": "POST", "path": "/", "headers": raw})


def test_without_a_token_nobody_may_act() -> None:
    access = Access(None)
    assert not access.configured and not access.token_matches("")
    assert not access.may_act(request({"Authorization": "Bearer x"}), "x")


def test_the_token_the_session_cookie_and_the_csrf_value() -> None:
    access = Access("s3cret")
    assert access.token_matches("s3cret") and not access.token_matches("s3cre")
    session, csrf = access.session(), access.csrf()
    assert "s3cret" not in session and "s3cret" not in csrf and session != csrf
    assert access.may_act(request(cookie=session), csrf)
    assert not access.may_act(request(cookie=session), "forged")  # CSRF
    assert not access.may_act(request(cookie=session), None)
    assert not access.may_act(request(cookie="guess"), csrf)
    assert access.may_act(request({"Authorization": "Bearer s3cret"}), None)
    assert not access.may_act(request({"Authorization": "Bearer nope"}), None)
    # Another token: every session and CSRF value changes.
    assert Access("other").session() != session
    with pytest.raises(ValueError):
        Access("  ")


@dataclass(frozen=True)
class Row:
    seq: int
    type: str
    command: str | None
    data: bytes
    created_at: float


def journal(*items: tuple[float, str | None, ev.Event]) -> list[Row]:
    return [
        Row(seq, ev.encode(e)[0].value, cmd, ev.encode(e)[1], at)
        for seq, (at, cmd, e) in enumerate(items)
    ]


def test_a_step_has_a_bar_per_attempt_and_gaps_for_retries() -> None:
    err = {"type": "E", "message": "m"}
    failed = ev.StepAttemptFailed(
        attempt=1, error=err, retry_at=104.0, started_at=101.0, worker="w1"
    )
    done = ev.StepCompleted(result=msgspec.Raw(b"1"), attempt=2, started_at=105.0, worker="w2")
    rows = journal(
        (100.0, None, ev.run_started("w", "v", b"[]")),
        (102.0, "step:s#0", failed),
        (106.0, "step:s#0", done),
        (107.0, "sleep:sleep#0", ev.TimerStarted(duration=3, fire_at=110.0)),
    )
    view = fold(rows)
    assert view is not None
    line = build(view, 100.0, now=110.0, ended=False)
    assert (line.start, line.end) == (100.0, 110.0)
    step, timer = line.lanes
    assert [b.css for b in step.bars] == ["b-attempt-failed", "b-retry-wait", "b-attempt-ok"]
    bad, gap, ok = step.bars
    assert (bad.left, bad.width) == (10.0, 10.0)  # 101..102 of 100..110
    assert (gap.left, gap.width) == (20.0, 30.0)  # 102..105
    assert (ok.left, ok.width) == (50.0, 10.0)
    assert "on w1" in bad.title and "E: m" in bad.title
    assert step.failed  # an attempt failed: shown by the failed-only filter
    [bar] = timer.bars
    assert bar.css == "b-timer" and (bar.left, bar.width) == (70.0, 30.0)  # waiting until now
    assert not timer.failed


def test_values_and_errors_are_shown_redacted() -> None:
    secret = b'{"dsn": "postgresql://app:hunter2@db/prod"}'
    assert "hunter2" not in format.pretty(secret) and "***" in format.pretty(secret)
    assert "hunter2" not in format.short(secret)
    error = {"type": "OperationalError", "message": "password=hunter2 refused", "traceback": "x"}
    assert "hunter2" not in format.error_text(error)
    assert format.pretty(b"x" * (format.MAX_VALUE + 10)).endswith("more characters)")
    assert format.duration(0.25) == "250 ms" and format.duration(3700) == "1 h 1 min"
    assert format.run_path("p/child:x#0") == "/run/p%2Fchild%3Ax%230"
