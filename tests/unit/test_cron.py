"""Schedule time math: cron ticks in a time zone, missed ticks, one-shot times, tick run ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from keel.core import cron
from keel.errors import ConfigurationError, InvalidScheduleError

PARIS = ZoneInfo("Europe/Paris")


def ts(*args: int, tz: object = PARIS, fold: int = 0) -> float:
    return datetime(*args, tzinfo=tz, fold=fold).timestamp()  # type: ignore[arg-type, misc]


def test_next_tick_is_strictly_after_and_in_the_time_zone() -> None:
    expr = cron.check_cron("0 9 * * MON-FRI", "Europe/Paris")
    friday_10 = ts(2025, 1, 3, 10)
    assert cron.next_tick(expr, "Europe/Paris", friday_10) == ts(2025, 1, 6, 9)
    monday_9 = ts(2025, 1, 6, 9)
    assert cron.next_tick(expr, "Europe/Paris", monday_9) == ts(2025, 1, 7, 9)
    assert cron.next_tick(expr, "Europe/Paris", monday_9 - 0.5) == monday_9
    assert cron.next_tick(expr, "UTC", friday_10) == ts(2025, 1, 6, 9, tz=UTC)


def test_six_fields_put_seconds_first_and_macros_expand() -> None:
    assert cron.next_tick("*/10 * * * * *", "UTC", ts(2025, 1, 1, 0, 0, 3, tz=UTC)) == ts(
        2025, 1, 1, 0, 0, 10, tz=UTC
    )
    assert cron.check_cron("@daily", "UTC") == "0 0 * * *"
    assert cron.check_cron("  0   9 * *  1 ", "UTC") == "0 9 * * 1"


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("61 * * * *", "Bad minute"),
        ("* * *", "Wrong number of fields"),
        ("every day", "Wrong number of fields"),
        ("0 0 30 2 *", "Bad day-of-month"),  # never fires
        ("", "non-empty"),
        ("0 9 * * FUNDAY", "Bad day-of-week"),
    ],
)
def test_invalid_cron_expressions_are_typed_errors(expr: str, message: str) -> None:
    with pytest.raises(InvalidScheduleError, match=message) as err:
        cron.check_cron(expr, "UTC")
    assert err.value.field == "cron"
    assert isinstance(err.value, ConfigurationError)
    if expr:
        assert "invalid cron expression" in str(err.value)


def test_unknown_time_zones_are_typed_errors() -> None:
    for name in ("Mars/Olympus", "../etc/passwd", ""):
        with pytest.raises(InvalidScheduleError, match="time zone") as err:
            cron.zone(name)
        assert err.value.field == "timezone"
    with pytest.raises(InvalidScheduleError, match="unknown time zone"):
        cron.check_cron("* * * * *", "Europe/Atlantis")
    assert cron.zone("utc") is UTC


def test_daylight_saving_days_fire_each_daily_tick_once() -> None:
    expr = "30 2 * * *"  # 02:30 does not exist on 30 March and happens twice on 26 Oct 2025
    spring = cron.next_tick(expr, "Europe/Paris", ts(2025, 3, 29, 12))
    assert spring == ts(2025, 3, 30, 3, 0)  # Debian cron: at once, when the hour is skipped
    first_pass = cron.next_tick(expr, "Europe/Paris", ts(2025, 10, 25, 12))
    assert first_pass == ts(2025, 10, 26, 2, 30)
    # From inside the repeated hour (second pass) the next tick is the next day,
    # never the first pass again (which is earlier in real time).
    second_pass_0220 = ts(2025, 10, 26, 2, 20, fold=1)
    assert cron.next_tick(expr, "Europe/Paris", second_pass_0220) == ts(2025, 10, 27, 2, 30)
    hourly = "0 * * * *"  # an hourly job runs in both passes of the repeated hour
    one = cron.next_tick(hourly, "Europe/Paris", ts(2025, 10, 26, 1, 30))
    two = cron.next_tick(hourly, "Europe/Paris", one or 0)
    assert two is not None and one is not None and two - one == 3600


def test_latest_tick_takes_the_last_missed_one() -> None:
    expr = "0 * * * *"
    first = ts(2025, 1, 1, 10, tz=UTC)
    assert cron.latest_tick(expr, "UTC", first, first) == first
    assert cron.latest_tick(expr, "UTC", first, first + 3599) == first
    assert cron.latest_tick(expr, "UTC", first, first + 5 * 3600 + 12) == first + 5 * 3600


def test_latest_tick_after_a_long_outage_of_a_frequent_schedule() -> None:
    first = ts(2025, 1, 1, 10, tz=UTC)
    now = first + 3 * 86400 + 7.25  # three days of per-second ticks missed
    assert cron.latest_tick("* * * * * *", "UTC", first, now) == first + 3 * 86400 + 7
    assert cron.latest_tick("*/5 * * * *", "UTC", first, now) == first + 3 * 86400


def test_a_one_shot_time_needs_a_zone() -> None:
    aware = datetime(2030, 1, 31, 9, tzinfo=PARIS)
    assert cron.parse_at(aware, None) == aware.timestamp()
    assert cron.parse_at("2030-01-31T08:00:00Z", None) == aware.timestamp()
    assert cron.parse_at("2030-01-31T09:00:00", "Europe/Paris") == aware.timestamp()
    assert cron.parse_at(datetime(2030, 1, 31, 9), "Europe/Paris") == aware.timestamp()
    with pytest.raises(InvalidScheduleError, match="no time zone") as err:
        cron.parse_at(datetime(2030, 1, 31, 9), None)
    assert err.value.field == "at"
    with pytest.raises(InvalidScheduleError, match="not an ISO-8601"):
        cron.parse_at("next tuesday", None)
    with pytest.raises(InvalidScheduleError, match="not float"):
        cron.parse_at(1.5e9, None)
    with pytest.raises(InvalidScheduleError, match="unknown time zone"):
        cron.parse_at("2030-01-31T09:00:00", "Nowhere/Land")


def test_tick_run_ids_are_readable_and_the_same_everywhere() -> None:
    tick = ts(2030, 1, 31, 9)
    assert cron.tick_run_id("nightly", tick) == "nightly@2030-01-31T08:00:00Z"
    later = tick + timedelta(microseconds=250_000).total_seconds()
    assert cron.tick_run_id("once", later) == "once@2030-01-31T08:00:00.250000Z"
