"""Databases written by the previous release open, and their in-flight runs finish.

The fixtures in ``data/`` were recorded by an earlier Keel (``data/README.md``
says which) running ``compat_app``: runs suspended on a due sleep, on signal
waits (one with its signal already buffered), on a step retry, on a child, on
a queued dispatched step; a continue-as-new chain half way; a saga block in
flight; a pending run; a run held by a worker killed mid-step; completed,
failed and cancelled runs; schedules and a queue limit. Each test opens a copy
with the current code (migrating it if the schema moved on), runs an
in-process worker of ``compat_app`` (public API only), sends the signals
``data/expected.json`` lists, and checks every run ends as recorded there;
then that the journals still read, and replay (``keel replay``) against the
same code.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import keel
from tests import pg
from tests.compat import compat_app
from tests.compat.pg_load import load_dump

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DATA = HERE / "data"
SQLITE_FIXTURE = DATA / "sqlite" / "keel.db"
POSTGRES_FIXTURE = DATA / "postgres.sql"
EXPECTED: dict[str, Any] = json.loads((DATA / "expected.json").read_text())
RUNS: dict[str, dict[str, Any]] = EXPECTED["runs"]
APP = compat_app.__name__
CRON = "compat-every-minute"  # a cron schedule: its tick missed since the fixture fires
DEADLINE = 15.0  # seconds for every run to end; they take well under one

_SCRIPT = Path(sys.executable).with_name("keel")
KEEL_CMD = (
    [str(_SCRIPT)]
    if _SCRIPT.exists()
    else [sys.executable, "-c", "import sys; from keel.cli.main import main; sys.exit(main())"]
)
LAST_EVENT = {
    "completed": "run_completed",
    "failed": "run_failed",
    "cancelled": "run_cancelled",
    "continued": "run_continued",
}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(params=["sqlite", "postgres"])
def previous_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A private copy of the previous release's database, as a URL."""
    if request.param == "sqlite":
        before = digest(SQLITE_FIXTURE)
        copy = tmp_path / "keel.db"
        shutil.copyfile(SQLITE_FIXTURE, copy)
        yield f"sqlite:///{copy}"
        assert digest(SQLITE_FIXTURE) == before, "the committed fixture was written to"
        return
    pg.require_postgres()  # skips loudly, or fails under CI=true
    url = pg.empty_database_url()
    try:
        load_dump(url, POSTGRES_FIXTURE)
        yield url
    finally:
        pg.drop_database_later(url)


async def state_of(client: keel.Client, run_id: str) -> str | None:
    try:
        return (await client.get(run_id)).state.value
    except keel.RunNotFoundError:
        return None


async def check_history(client: keel.Client, run_id: str, state: str) -> None:
    """The journal reads: contiguous, from its start to the event that ended it."""
    events = await client.history(run_id)
    assert [e.seq for e in events] == list(range(len(events))), run_id
    assert events[0].type == "run_started", run_id
    if state in LAST_EVENT:
        assert events[-1].type == LAST_EVENT[state], (run_id, events[-1])
    seen = [(e.type, e.name or "") for e in events]
    for kind, name, count in RUNS[run_id].get("history", []):
        assert seen.count((kind, name)) == count, (run_id, kind, name, seen)


async def check_as_recorded(url: str) -> datetime:
    """Before any worker: the current code reads every run and schedule as recorded.
    Returns the cron schedule's next tick as recorded."""
    async with keel.Client(url) as client:  # opening migrates the database if need be
        for run_id, want in RUNS.items():
            state = await state_of(client, run_id)
            assert state == want["recorded_state"], (run_id, state)
            if state in LAST_EVENT:
                await check_history(client, run_id, state)
        for schedule_id, want in EXPECTED["schedules"].items():
            info = await client.get_schedule(schedule_id)
            assert (info.workflow, info.state) == (want["workflow"], want["recorded_state"])
        doomed = await client.get("compat-doomed")
        assert doomed.lease_owner is not None  # still held by the worker that died
        tick = (await client.get_schedule(CRON)).next_fire_at
        assert tick is not None
        return tick


async def until_all_ended(client: keel.Client, since: datetime, missed: datetime) -> str | None:
    """Wait (deadline) for every run to be in its final state, and for the cron
    schedule to have fired the tick ``missed`` while no worker ran (if it was
    due when the test began). Returns the run of that tick."""
    deadline = time.monotonic() + DEADLINE
    while True:
        behind = {}
        for run_id, want in RUNS.items():
            state = await state_of(client, run_id)
            if state in LAST_EVENT and state != want["state"]:  # ended otherwise: for good
                info = await client.get(run_id)
                pytest.fail(f"{run_id} ended {state}, not {want['state']}: {info.error}")
            if state != want["state"]:
                behind[run_id] = state
        sched = await client.get_schedule(CRON)
        tick_run = sched.last_run_id
        tick_done = missed > since or (
            tick_run is not None and await state_of(client, tick_run) == "completed"
        )
        if not behind and tick_done:
            return None if missed > since else tick_run
        if time.monotonic() > deadline:
            why = {r: (await client.get(r)).waiting for r in behind if behind[r] is not None}
            pytest.fail(
                f"runs not in their final state after {DEADLINE}s: {behind}; waiting: {why}; "
                f"{CRON}: missed tick {missed}, last run {tick_run}"
            )
        await asyncio.sleep(0.05)


async def check_final(url: str, since: datetime, tick_run: str | None) -> None:
    """With the worker stopped: every run's outcome, journal, and the schedules."""
    async with keel.Client(url) as client:
        for run_id, want in RUNS.items():
            info = await client.get(run_id)
            assert info.state.value == want["state"], (run_id, info.state)
            assert info.workflow == want["workflow"], run_id
            if want["state"] == "completed":
                assert await client.result(run_id, timeout=0) == want["result"], run_id
            if "error" in want:
                assert info.error is not None, run_id
                got = {"type": info.error.get("type"), "message": info.error.get("message")}
                assert got == want["error"], run_id
            if "continued_to" in want:
                assert info.continued_to == want["continued_to"], run_id
            await check_history(client, run_id, want["state"])
        assert await client.result("compat-counter", timeout=0) == 6  # follows the chain

        once = await client.get_schedule("compat-once")
        assert (once.state, once.last_run_id) == (
            "done",
            EXPECTED["schedules"]["compat-once"]["last_run_id"],
        )
        paused_want = EXPECTED["schedules"]["compat-paused"]
        paused = await client.get_schedule("compat-paused")
        assert (paused.state, paused.cron, paused.timezone, paused.input) == (
            "paused",
            paused_want["cron"],
            paused_want["timezone"],
            paused_want["input"],
        )
        cron_want = EXPECTED["schedules"][CRON]
        cron = await client.get_schedule(CRON)
        assert (cron.state, cron.cron, cron.timezone) == ("active", cron_want["cron"], "UTC")
        assert cron.next_fire_at is not None and cron.next_fire_at > since
        if tick_run is not None:  # a tick was due when the test began: its run
            assert tick_run.startswith(f"{CRON}@"), tick_run
            assert await client.result(tick_run, timeout=0) == cron_want["run_result"]
        limits = {q.queue: q.concurrency for q in await client.queues()}
        for queue, limit in EXPECTED["queue_limits"].items():
            assert limits.get(queue) == limit


def keel_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KEEL_DATABASE_URL"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["NO_COLOR"] = "1"
    return subprocess.run(
        [*KEEL_CMD, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )


def check_replay(url: str, out: Path) -> None:
    """``keel runs export`` the finished runs, then ``keel replay`` the files against compat_app."""
    exported = keel_cli("runs", "export", *RUNS, "-o", str(out), "--db", url)
    assert exported.returncode == 0, exported.stderr
    assert len(list(out.glob("*.json"))) == len(RUNS), exported.stdout
    replayed = keel_cli("replay", "--app", APP, str(out), "--strict", "--json")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    report = json.loads(replayed.stdout)
    assert report["passed"] is True
    assert report["checked"] == report["ok"] == len(RUNS), report


async def test_previous_release_database_runs_finish(previous_db: str, tmp_path: Path) -> None:
    missed = await check_as_recorded(previous_db)
    shown = keel_cli("runs", "show", "compat-booking-rejected", "--db", previous_db)
    assert shown.returncode == 0, shown.stderr
    assert "BookingRejected" in shown.stdout, shown.stdout  # its recorded error
    assert "b-rejected rejected: no" in shown.stdout, shown.stdout
    since = datetime.now(UTC)
    worker = keel.Worker(previous_db, queues=[compat_app.QUEUE], cache=False, poll_interval=0.05)
    async with worker:
        client = worker.client()
        for sig in EXPECTED["signals"]:
            delivered = await client.signal(
                sig["run_id"], sig["name"], sig["payload"], delivery_id=sig["delivery_id"]
            )
            assert delivered, sig
        tick_run = await until_all_ended(client, since, missed)
    await check_final(previous_db, since, tick_run)
    check_replay(previous_db, tmp_path / "journals")
