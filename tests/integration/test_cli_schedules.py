"""``keel schedules``: create, list, show, pause, resume and delete on a SQLite file;
a schedule made by the CLI is fired by a worker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import keel
from keel.core.cron import tick_run_id
from tests.integration.test_cli import (  # noqa: F401  (fixtures)
    APP,
    _keel_command,
    _wait_for,
    app_dir,
    assert_clean_error,
    cwd,
    db_url,
    keel_cli,
)


def create(url: str, *args: str) -> str:
    result = keel_cli("schedules", "create", "cli_greet", "--app", APP, "--db", url, *args)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def test_create_list_show_pause_resume_delete(cwd: Path) -> None:  # noqa: F811
    url = db_url(cwd / "s.db")
    made = create(url, '"ada"', "--cron", "0 9 * * MON-FRI", "--tz", "Europe/Paris", "--id", "am")
    assert made == "am"
    once = create(url, '"bob"', "--kwarg", 'punctuation="?"', "--at", "2030-01-31T09:00Z")
    assert once  # a generated id

    listed = keel_cli("schedules", "list", "--db", url)
    assert listed.exit_code == 0, listed.output
    assert "am" in listed.stdout and "0 9 * * MON-FRI (Europe/Paris)" in listed.stdout
    assert "once at" in listed.stdout and "active" in listed.stdout
    docs = json.loads(keel_cli("schedules", "list", "--json", "--db", url).stdout)["schedules"]
    by_id = {d["schedule_id"]: d for d in docs}
    assert by_id["am"]["cron"] == "0 9 * * MON-FRI" and by_id["am"]["timezone"] == "Europe/Paris"
    assert by_id["am"]["input"] == {"name": "ada", "punctuation": "!"}
    assert by_id[once]["at"] == "2030-01-31T09:00:00Z" and by_id[once]["cron"] is None
    assert by_id[once]["next_fire_at"] == "2030-01-31T09:00:00Z"
    assert by_id[once]["input"] == {"name": "bob", "punctuation": "?"}

    shown = keel_cli("schedules", "show", "am", "--db", url)
    assert shown.exit_code == 0 and "Europe/Paris" in shown.stdout and '"ada"' in shown.stdout
    paused = keel_cli("schedules", "pause", "am", "--db", url)
    assert paused.exit_code == 0 and "paused" in paused.stdout
    doc = json.loads(keel_cli("schedules", "show", "am", "--json", "--db", url).stdout)
    assert doc["state"] == "paused"
    resumed = keel_cli("schedules", "resume", "am", "--db", url)
    assert resumed.exit_code == 0 and "next run:" in resumed.stdout
    deleted = keel_cli("schedules", "delete", "am", "--db", url)
    assert deleted.exit_code == 0 and "deleted" in deleted.stdout
    only = json.loads(keel_cli("schedules", "list", "--json", "--db", url).stdout)["schedules"]
    assert [d["schedule_id"] for d in only] == [once]
    assert keel_cli("schedules", "list", "-w", "none", "--db", url).stdout == "no schedules match\n"


def test_bad_schedules_are_clean_errors(cwd: Path) -> None:  # noqa: F811
    url = db_url(cwd / "bad.db")

    def attempt(*args: str) -> object:
        return keel_cli("schedules", "create", "cli_greet", "--app", APP, "--db", url, *args)

    assert_clean_error(attempt('"x"', "--cron", "61 * * * *"), 2, "invalid cron expression")
    assert_clean_error(
        attempt('"x"', "--cron", "* * * * *", "--tz", "Europe/Nowhere"), 2, "unknown time zone"
    )
    assert_clean_error(attempt('"x"', "--at", "soon"), 2, "not an ISO-8601")
    naive = attempt('"x"', "--at", "2030-01-31T09:00")
    assert_clean_error(naive, 2, "has no time zone", "--tz ZONE", "2030-01-31T09:00Z")
    assert "timezone=" not in naive.stderr and "tzinfo=" not in naive.stderr  # the Python names
    neither = attempt('"x"')
    assert neither.exit_code == 2 and "exactly one of --cron and --at" in neither.output
    both = attempt('"x"', "--cron", "* * * * *", "--at", "2030-01-01T00:00Z")
    assert both.exit_code == 2
    assert_clean_error(attempt("x", "--cron", "* * * * *"), 2, "not valid JSON")
    assert_clean_error(attempt("7", "--cron", "* * * * *"), 1, "argument 'name'")
    assert not (cwd / "bad.db").exists()  # nothing was written, not even the file

    create(url, '"x"', "--cron", "* * * * *", "--id", "dup")
    assert_clean_error(attempt('"x"', "--cron", "* * * * *", "--id", "dup"), 1, "exists already")
    unknown = keel_cli("schedules", "create", "nope", "--app", APP, "--cron", "* * * * *")
    assert_clean_error(unknown, 1, "no workflow named 'nope'")
    for action in ("pause", "resume", "delete", "show"):
        result = keel_cli("schedules", action, "ghost", "--db", url)
        assert_clean_error(result, 1, "no schedule with id 'ghost'")
    assert_clean_error(keel_cli("schedules", "list"), 1, "no Keel database")


def test_a_schedule_created_by_the_cli_is_fired_by_a_worker(cwd: Path) -> None:  # noqa: F811
    url = db_url(cwd / "fire.db")
    at = datetime.now(UTC) + timedelta(seconds=0.2)
    create(url, '"eve"', "--at", at.isoformat(), "--id", "soon")
    run_id = tick_run_id("soon", at.timestamp())

    async def work() -> str:
        async with keel.Worker(url, poll_interval=0.05) as worker:  # the app is imported
            client = worker.client()
            deadline = time.monotonic() + 15
            while await client.store.reads.get_run(run_id) is None:
                assert time.monotonic() < deadline, "the schedule never fired"
                await asyncio.sleep(0.02)
            result: str = await client.result(run_id, timeout=10)
            return result

    assert asyncio.run(work()) == "hello eve!"
    doc = json.loads(keel_cli("schedules", "show", "soon", "--json", "--db", url).stdout)
    assert doc["state"] == "done" and doc["last_run_id"] == run_id
    history = keel_cli("runs", "history", run_id, "--db", url)
    assert history.exit_code == 0 and "by schedule soon" in history.stdout


@pytest.mark.acceptance
def test_keel_worker_fires_a_cron_schedule(cwd: Path, app_dir: Path) -> None:  # noqa: F811
    url = db_url(cwd / "cron.db")
    create(url, '"cron"', "--cron", "* * * * * *", "--id", "each-second")
    env = {k: v for k, v in os.environ.items() if k != "KEEL_DATABASE_URL"}
    env["PYTHONPATH"] = os.pathsep.join([str(app_dir), env.get("PYTHONPATH", "")])
    log_path = cwd / "worker.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [*_keel_command(), "worker", APP, "--db", url, "--poll-interval", "0.05"],
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:

        def completed() -> int:
            runs = json.loads(keel_cli("runs", "list", "--json", "--db", url).stdout)["runs"]
            return sum(r["state"] == "completed" for r in runs)

        _wait_for(lambda: completed() >= 2, 20, "two ticks to run")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log_path.read_text()
    assert "schedule each-second: started run each-second@" in text
    assert "Traceback" not in text
