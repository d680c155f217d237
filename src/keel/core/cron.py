"""Schedule times: cron expressions in a time zone, one-shot times, tick run ids.

Pure functions over epoch seconds; the clock is always passed in. Cron
expressions are evaluated by ``cronsim`` (Debian cron semantics, including its
daylight-saving rules: a daily job in a skipped hour runs when the hour is
skipped, a daily job in a repeated hour runs once). Five fields, or six with
seconds first (``*/10 * * * * *``), plus the usual ``@daily``-style macros.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from keel.errors import InvalidScheduleError

#: Shorthands accepted in place of five fields (as in Vixie cron).
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

# How many missed ticks to step through one by one before jumping back from
# "now" instead (a per-second schedule after a long outage).
_FORWARD_STEPS = 64


def zone(name: str) -> tzinfo:
    """The IANA time zone ``name``; :class:`InvalidScheduleError` if there is none."""
    if not isinstance(name, str) or not name:
        raise InvalidScheduleError("timezone", f"time zone must be an IANA name, not {name!r}")
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidScheduleError(
            "timezone",
            f"unknown time zone {name!r} (use an IANA name such as 'Europe/Paris'; "
            "without a system time zone database, `pip install tzdata`)",
        ) from None


def check_cron(expr: str, tz: str) -> str:
    """The expression as stored (macros expanded); raise if it is invalid or never fires."""
    if not isinstance(expr, str) or not expr.strip():
        raise InvalidScheduleError("cron", f"cron expression must be a non-empty string: {expr!r}")
    text = " ".join(expr.split())
    text = MACROS.get(text.lower(), text)
    try:
        CronSim(text, datetime(2000, 1, 1, tzinfo=zone(tz)))
    except CronSimError as exc:
        raise InvalidScheduleError(
            "cron",
            f"invalid cron expression {expr!r}: {exc} (five fields 'minute hour day month "
            "weekday', or six with seconds first)",
        ) from None
    return text


def next_tick(expr: str, tz: str, after: float) -> float | None:
    """The first tick of ``expr`` strictly after ``after``; ``None`` if it never fires again."""
    for tick in _ticks(expr, tz, after):
        return tick
    return None


def latest_tick(expr: str, tz: str, first: float, now: float) -> float:
    """The latest tick in ``[first, now]``, where ``first`` is a due tick (``<= now``)."""
    latest = first
    for _ in range(_FORWARD_STEPS):
        following = next_tick(expr, tz, latest)
        if following is None or following > now:
            return latest
        latest = following
    # A long outage of a frequent schedule: search back from now instead.
    zone_ = zone(tz)
    # Half a second past the whole second makes cronsim start its reverse
    # search at that whole second itself (it drops microseconds first).
    start = datetime.fromtimestamp(int(now), zone_).replace(microsecond=500_000)
    try:
        back = next(CronSim(expr, start, reverse=True)).timestamp()
    except StopIteration:
        return latest
    return max(latest, back) if back <= now else latest


def _ticks(expr: str, tz: str, after: float) -> Iterator[float]:
    """Ticks strictly after ``after``, increasing (at most a few, for :func:`next_tick`)."""
    sim = CronSim(expr, datetime.fromtimestamp(after, zone(tz)))
    # In a repeated (daylight-saving) hour cronsim works on wall-clock time and
    # can answer a moment of the first pass: skip anything not after ``after``.
    for _ in range(4):
        try:
            tick = next(sim).timestamp()
        except StopIteration:
            return
        if tick > after:
            yield tick
            return


def parse_at(at: object, tz: str | None) -> float:
    """A one-shot time as epoch seconds: an aware ``datetime`` or ISO-8601 string, or a
    naive one with ``tz`` naming its zone."""
    when: datetime
    if isinstance(at, datetime):
        when = at
    elif isinstance(at, str):
        try:
            when = datetime.fromisoformat(at.strip())
        except ValueError:
            raise InvalidScheduleError(
                "at", f"at={at!r} is not an ISO-8601 date and time (e.g. 2030-01-31T09:00:00Z)"
            ) from None
    else:
        raise InvalidScheduleError(
            "at", f"at must be a datetime or an ISO-8601 string, not {type(at).__name__}"
        )
    if when.tzinfo is None or when.utcoffset() is None:
        if tz is None:
            raise InvalidScheduleError(
                "at",
                f"at={at!r} has no time zone: give it one (e.g. ...+01:00 or tzinfo=) "
                "or pass timezone=",
            )
        when = when.replace(tzinfo=zone(tz))
    return when.timestamp()


def tick_run_id(schedule_id: str, tick: float) -> str:
    """The run id of one tick of a schedule: the same in every worker, so a tick
    started twice is one run (``nightly@2030-01-31T08:00:00Z``)."""
    stamp = datetime.fromtimestamp(tick, UTC).isoformat().replace("+00:00", "Z")
    return f"{schedule_id}@{stamp}"


def resume_tick(expr: str | None, tz: str, next_fire_at: float | None, now: float) -> float | None:
    """Where a resumed schedule starts again: a cron schedule at its first tick after
    ``now`` (ticks missed while paused are skipped), a one-shot (``expr`` None) at its
    time ``next_fire_at`` (so a one-shot paused past its time fires on resume)."""
    if expr is None:
        return next_fire_at
    return next_tick(expr, tz, now)


def plan_tick(expr: str | None, tz: str, due: float, now: float) -> tuple[float, float | None]:
    """``(tick, next_fire_at)`` for a schedule due at ``due <= now``: after downtime
    only the latest missed tick fires, and the next is the first after ``now``. A
    one-shot (``expr`` None) fires at ``due`` and has no next."""
    if expr is None:
        return due, None
    return latest_tick(expr, tz, due, now), next_tick(expr, tz, now)
