"""``keel runs list``: repeated filters, time bounds, --parent, --count, a "more:" line
that repeats every filter, and times shown in UTC (``--local`` opts in to local time)."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

import keel
from keel.store.ports import Turn
from keel.testing.conformance_children import child_run, started
from keel.testing.conformance_helpers import leased, new_run
from tests import pg
from tests.integration.test_cli import assert_clean_error, keel_cli


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'keel.db'}"
        return
    pg.require_postgres()
    db = pg.fresh_database_url()
    yield db
    pg.drop_database_later(db)


def populate(url: str) -> dict[str, float]:
    """Runs a0..a3 (workflow a), b0..b2 (b); a1, b1 cancelled; p0 (running) with
    children p0/k0, p0/k1. Returns each run's created_at."""

    async def go() -> dict[str, float]:
        async with keel.Client(url) as client:
            store = client.store
            for name, count in (("a", 4), ("b", 3)):
                for i in range(count):
                    await store.runs.create(new_run(f"{name}{i}", name))
            lease = await leased(store, "p0")
            kids = [child_run("p0/k0", "p0"), child_run("p0/k1", "p0")]
            await store.runs.commit(lease, Turn(1, [started(0), started(1)], children=kids))
            for run_id in ("a1", "b1"):
                await client.cancel(run_id)
            return {r.run_id: r.created_at for r in (await store.reads.list_runs(limit=100)).runs}

    return asyncio.run(go())


def listed(*args: str) -> list[str]:
    result = keel_cli("runs", "list", "--json", *args)
    assert result.exit_code == 0, result.output
    return sorted(r["run_id"] for r in json.loads(result.stdout)["runs"])


def test_repeated_filters_times_parent_and_count(url: str) -> None:
    created = populate(url)
    db = ("--db", url)
    assert listed("-s", "cancelled", "-s", "running", *db) == ["a1", "b1", "p0"]
    assert listed("-w", "a", "-w", "b", "-s", "pending", *db) == ["a0", "a2", "a3", "b0", "b2"]
    assert listed("--parent", "p0", *db) == ["p0/k0", "p0/k1"]
    assert listed("--parent", "p0", "-s", "cancelled", *db) == []

    times = sorted(set(created.values()))
    middle = len(times) // 2
    iso, cut = iso_between(times[middle - 1], times[middle])
    after = sorted(r for r, t in created.items() if t >= cut)
    assert after and len(after) < len(created)
    assert listed("--since", iso, *db) == after
    assert listed("--until", iso, *db) == sorted(set(created) - set(after))
    assert listed("--since", "1h", *db) == sorted(created)
    assert listed("--until", "1h", *db) == []

    def count(*args: str) -> str:
        result = keel_cli("runs", "list", "--count", *args, *db)
        assert result.exit_code == 0, result.output
        return result.stdout.strip()

    assert count() == str(len(created))
    assert count("-s", "cancelled", "-s", "running") == "3"
    assert count("--parent", "p0") == "2"
    doc = json.loads(keel_cli("runs", "list", "--count", "--json", "-w", "a", *db).stdout)
    assert doc == {"count": 4}


def test_the_more_line_repeats_every_filter(url: str) -> None:
    populate(url)
    db = ("--db", url)
    first = keel_cli("runs", "list", "-s", "pending", "-s", "cancelled", "-w", "a", "-w", "b",
                     "--since", "1h", "--limit", "2", *db)  # fmt: skip
    assert first.exit_code == 0, first.output
    more = [line for line in first.stdout.splitlines() if line.startswith("more: ")]
    assert len(more) == 1, first.stdout
    words = shlex.split(more[0].removeprefix("more: "))
    assert words[:3] == ["keel", "runs", "list"]
    pairs = list(zip(words[3::2], words[4::2], strict=True))
    assert ("-s", "pending") in pairs and ("-s", "cancelled") in pairs
    assert ("-w", "a") in pairs and ("-w", "b") in pairs and ("--limit", "2") in pairs
    since = dict(pairs)["--since"]  # the age, fixed as an absolute UTC time
    assert since.endswith("Z") and datetime.fromisoformat(since) <= datetime.now(UTC)

    seen: list[str] = []
    args = ["runs", "list", "-s", "pending", "-s", "cancelled", "-w", "a", "-w", "b",
            "--since", "1h", "--limit", "2"]  # fmt: skip
    for _ in range(10):  # follow the more: lines to the end
        page = keel_cli(*args, "--json", *db)
        assert page.exit_code == 0, page.output
        doc = json.loads(page.stdout)
        seen += [r["run_id"] for r in doc["runs"]]
        text = keel_cli(*args, *db).stdout
        hint = [line for line in text.splitlines() if line.startswith("more: ")]
        if doc["next_cursor"] is None:
            assert hint == []
            break
        args = shlex.split(hint[0].removeprefix("more: "))[1:]
    assert sorted(seen) == ["a0", "a1", "a2", "a3", "b0", "b1", "b2"]


def test_sorted_by_workflow_state_and_end_following_the_more_lines(url: str) -> None:
    created = populate(url)
    db = ("--db", url)

    def follow(*args: str) -> list[str]:
        """Every run of a sorted list, page by page through the "more:" lines."""
        seen: list[str] = []
        words = ["runs", "list", *args, "--limit", "2"]
        for _ in range(20):
            page = keel_cli(*words, "--json", *db)
            assert page.exit_code == 0, page.output
            doc = json.loads(page.stdout)
            seen += [r["run_id"] for r in doc["runs"]]
            hint = [
                ln for ln in keel_cli(*words, *db).stdout.splitlines() if ln.startswith("more: ")
            ]
            if doc["next_cursor"] is None:
                return seen
            words = shlex.split(hint[0].removeprefix("more: "))[1:]
            assert all(w in words for w in args)  # the order goes on with the pages
        raise AssertionError("the pages did not end")

    by_created = sorted(created, key=lambda r: (created[r], r))
    every = json.loads(keel_cli("runs", "list", "--json", "--limit", "100", *db).stdout)["runs"]
    workflow = {r["run_id"]: r["workflow"] for r in every}
    a_to_z = sorted(created, key=lambda r: (workflow[r], created[r], r))
    assert follow("--sort", "workflow", "--asc") == a_to_z
    assert follow("--sort", "workflow") == a_to_z[::-1]
    # State then newest first: cancelled (a1, b1), pending (the rest), running (p0).
    states = follow("--sort", "state", "--asc")
    assert states[:2] == sorted(["a1", "b1"], key=lambda r: (created[r], r))
    assert states[-1] == "p0"
    # End time: only the ended runs, the later cancel first.
    ended = follow("--sort", "ended")
    assert ended == ["b1", "a1"]
    assert follow("--sort", "ended", "--asc") == ["a1", "b1"]
    assert by_created[::-1] == follow()  # the default order is unchanged
    wrong = keel_cli("runs", "list", "--sort", "duration", *db)
    assert wrong.exit_code != 0 and "duration" in wrong.output


def test_list_refuses_bad_filters(url: str) -> None:
    populate(url)
    db = ("--db", url)
    result = keel_cli("runs", "list", "--since", "soon", *db)
    assert_clean_error(result, 2, "--since", "positive age")
    assert_clean_error(keel_cli("runs", "list", "--until", "0d", *db), 2, "--until")
    assert_clean_error(keel_cli("runs", "list", "-s", "sleeping", *db), 2, "sleeping")
    result = keel_cli("runs", "list", "--count", "--cursor", "x", *db)
    assert_clean_error(result, 2, "--count")


@pytest.fixture
def kolkata(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is UTC+05:30 (no daylight saving), for this test."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


UTC_TIME = re.compile(r"\b\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ")
LOCAL_TIME = re.compile(r"\b\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+05:30")


def test_times_are_utc_with_a_zone_and_local_with_local(tmp_path: Path, kolkata: None) -> None:
    url = f"sqlite:///{tmp_path / 'keel.db'}"
    populate(url)
    db = ("--db", url)
    for command in (("runs", "list"), ("runs", "show", "p0"), ("runs", "history", "a0")):
        utc = keel_cli(*command, *db).stdout
        assert UTC_TIME.search(utc) and not LOCAL_TIME.search(utc), utc
        local = keel_cli(*command, "--local", *db).stdout
        assert LOCAL_TIME.search(local) and not UTC_TIME.search(local), local
        globally = keel_cli("--local", *command, *db).stdout
        assert LOCAL_TIME.search(globally), globally
    shown = keel_cli("runs", "show", "p0", *db).stdout
    row = next(line for line in shown.splitlines() if line.startswith("created"))
    stamp = UTC_TIME.search(row)
    assert stamp is not None
    local_row = next(
        line for line in keel_cli("runs", "show", "p0", "--local", *db).stdout.splitlines()
        if line.startswith("created")
    )  # fmt: skip
    local_stamp = LOCAL_TIME.search(local_row)
    assert local_stamp is not None
    assert datetime.fromisoformat(stamp[0].replace("Z", "+00:00")) == datetime.fromisoformat(
        local_stamp[0]
    )  # the same moment

    # A time typed without a zone is UTC, or local time under --local.
    created = populate_times(url)
    times = sorted(set(created.values()))
    iso, cut = iso_between(times[-2], times[-1])
    naive_utc = iso.removesuffix("+00:00")
    assert listed("--since", naive_utc, *db) == sorted(r for r, t in created.items() if t >= cut)
    local = datetime.fromisoformat(iso).astimezone().replace(tzinfo=None)
    naive_local = local.isoformat()  # the same moment on the local wall clock (+05:30)
    assert listed("--since", naive_local, "--local", *db) == listed("--since", naive_utc, *db)
    assert len(listed("--since", naive_local, *db)) < len(created)  # read as UTC: 5.5h later


def iso_between(earlier: float, later: float) -> tuple[str, float]:
    """An ISO 8601 UTC time (microseconds) strictly between two creation times, and
    its epoch value: a bound that rounding cannot move past either run."""
    when = datetime.fromtimestamp((earlier + later) / 2, UTC)
    assert earlier < when.timestamp() < later
    return when.isoformat(), when.timestamp()


def populate_times(url: str) -> dict[str, float]:
    async def go() -> dict[str, float]:
        async with keel.Client(url) as client:
            return {
                r.run_id: r.created_at for r in (await client.store.reads.list_runs(limit=100)).runs
            }

    return asyncio.run(go())
