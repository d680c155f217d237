"""The ``keel`` command: exit codes, clean errors, JSON shapes, the demo, worker drain."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import keel
from keel.cli.main import cli
from keel.cli.render import Timeline
from keel.client import HistoryEvent

APP = "keel_cli_testapp"
APP_SOURCE = '''
    """Workflows for the CLI tests."""
    import time

    import keel


    @keel.step
    def nap(seconds: float) -> str:
        time.sleep(seconds)
        return "rested"


    @keel.workflow(name="cli_slow")
    async def slow(seconds: float) -> str:
        first = await nap(seconds)
        return first + " twice: " + await nap(0.0)


    @keel.workflow(name="cli_fail")
    async def failing(x: int) -> int:
        raise ValueError(f"boom {x}")


    @keel.workflow(name="cli_greet")
    async def greet(name: str, punctuation: str = "!") -> str:
        return f"hello {name}{punctuation}"
'''

ORDER = '{"order_id": "T-1", "sku": "MUG", "quantity": 1, "amount_cents": 100}'


@pytest.fixture(scope="session")
def app_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A directory holding the test app module, importable for the whole session."""
    path = tmp_path_factory.mktemp("cliapp")
    (path / f"{APP}.py").write_text(textwrap.dedent(APP_SOURCE))
    sys.path.insert(0, str(path))
    yield path
    sys.path.remove(str(path))


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, app_dir: Path) -> Path:
    """Run each test in its own empty directory with no database configured."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KEEL_DATABASE_URL", raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))  # import_apps may add the cwd
    return tmp_path


def keel_cli(*args: str, env: dict[str, str] | None = None) -> Result:
    """Invoke ``keel`` in-process; an unexpected exception (a traceback) fails the test."""
    result = CliRunner().invoke(cli, list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def assert_clean_error(result: Result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, result.output
    assert result.stderr.startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr


def db_url(path: Path) -> str:
    return f"sqlite:///{path}"


# --- start: validation before anything is written ----------------------------------------


def test_start_with_invalid_json_names_the_argument(cwd: Path) -> None:
    result = keel_cli("start", "process_order", "--app", "keel.demo_app", "order-1")
    assert_clean_error(result, 2, "argument 1 ('order') is not valid JSON", '"order-1"')
    assert not (cwd / "keel.db").exists()


def test_start_with_a_bad_shape_fails_before_writing(cwd: Path) -> None:
    result = keel_cli("start", "process_order", "--app", "keel.demo_app", '{"order_id": 7}')
    assert_clean_error(result, 1, "argument 'order'", "process_order")
    result = keel_cli("start", "process_order", "--app", "keel.demo_app")
    assert_clean_error(result, 1, "missing a required argument: 'order'")
    result = keel_cli("start", "cli_greet", "--app", APP, '"x"', "--kwarg", "volume=3")
    assert_clean_error(result, 1, "unexpected keyword argument 'volume'")
    assert not (cwd / "keel.db").exists()


def test_start_with_malformed_kwarg_is_a_usage_error(cwd: Path) -> None:
    result = keel_cli("start", "cli_greet", "--app", APP, '"x"', "--kwarg", "punctuation")
    assert_clean_error(result, 2, "NAME=JSON")
    result = keel_cli("start", "cli_greet", "--app", APP, '"x"', "--kwarg", "punctuation=?")
    assert_clean_error(result, 2, "--kwarg punctuation is not valid JSON")


def test_start_unknown_workflow_and_unknown_module(cwd: Path) -> None:
    result = keel_cli("start", "nope", "--app", "keel.demo_app", "{}")
    assert_clean_error(result, 1, "no workflow named 'nope'", "process_order")
    result = keel_cli("start", "nope", "--app", "no_such_module_xyz", "{}")
    assert_clean_error(result, 2, "no_such_module_xyz")
    assert not (cwd / "keel.db").exists()


def test_app_module_that_raises_on_import(cwd: Path) -> None:
    (cwd / "broken_app_mod.py").write_text("raise RuntimeError('bad config')\n")
    result = keel_cli("worker", "broken_app_mod")
    assert result.exit_code == 1
    assert "error: importing module 'broken_app_mod' failed: RuntimeError: bad config" in (
        result.stderr
    )
    assert "click" not in result.stderr  # only the module's own frames are shown


def test_start_prints_the_run_id_and_is_idempotent(cwd: Path) -> None:
    result = keel_cli("start", "cli_greet", "--app", APP, '"ada"', "--run-id", "greet-1")
    assert result.exit_code == 0, result.output
    assert result.stdout == "greet-1\n"
    assert (cwd / "keel.db").exists()  # default database: ./keel.db
    again = keel_cli("start", "cli_greet", "--app", APP, '"bob"', "--run-id", "greet-1", "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout) == {
        "run_id": "greet-1",
        "workflow": "cli_greet",
        "created": False,
    }
    shown = json.loads(keel_cli("runs", "show", "greet-1", "--json").stdout)
    assert shown["state"] == "pending"
    assert shown["input"] == {"name": "ada", "punctuation": "!"}
    assert shown["result"] is None


def test_timeout_needs_wait(cwd: Path) -> None:
    result = keel_cli("start", "cli_greet", "--app", APP, '"x"', "--timeout", "1")
    assert result.exit_code == 2
    assert "--timeout only applies with --wait" in result.output


# --- control and inspection errors ---------------------------------------------------------


def test_reads_never_create_a_database(cwd: Path) -> None:
    result = keel_cli("runs", "list")
    assert_clean_error(result, 1, "no Keel database", "keel.db")
    assert not (cwd / "keel.db").exists()
    assert_clean_error(keel_cli("--db", "mysql://x", "runs", "list"), 1, "unsupported store URL")


def test_reads_never_turn_an_empty_file_into_a_database(cwd: Path) -> None:
    empty = cwd / "empty.db"
    empty.touch()
    for args in (("runs", "list"), ("runs", "show", "r1"), ("schedules", "list")):
        assert_clean_error(keel_cli(*args, "--db", str(empty)), 1, "no Keel database")
    assert empty.stat().st_size == 0
    assert not (cwd / "empty.db-wal").exists()


def test_signal_and_cancel(cwd: Path) -> None:
    url = db_url(cwd / "ctl.db")
    started = keel_cli("start", "cli_greet", "--app", APP, '"x"', "--db", url, "--run-id", "r1")
    assert started.exit_code == 0, started.output
    assert_clean_error(keel_cli("signal", "nope", "go", "--db", url), 1, "no run with id 'nope'")
    assert_clean_error(keel_cli("cancel", "nope", "--db", url), 1, "no run with id 'nope'")
    assert_clean_error(keel_cli("signal", "r1", "go", "{x", "--db", url), 2, "PAYLOAD_JSON")
    sent = keel_cli("signal", "r1", "go", '{"n": 1}', "--db", url)
    assert sent.exit_code == 0, sent.output
    assert "sent signal 'go'" in sent.stdout
    cancelled = keel_cli("cancel", "r1", "--db", url)
    assert cancelled.exit_code == 0, cancelled.output
    assert "cancelled" in cancelled.stdout
    again = keel_cli("cancel", "r1", "--db", url)  # idempotent, as client.cancel's intent
    assert again.exit_code == 0, again.output
    assert "run r1 was already cancelled" in again.stdout
    assert_clean_error(keel_cli("signal", "r1", "go", "--db", url), 1, "already cancelled")


def test_db_from_global_option_and_environment(cwd: Path) -> None:
    url = db_url(cwd / "env.db")
    assert keel_cli("--db", url, "start", "cli_greet", "--app", APP, '"a"').exit_code == 0
    listed = keel_cli("runs", "list", "--json", env={"KEEL_DATABASE_URL": url})
    assert [r["workflow"] for r in json.loads(listed.stdout)["runs"]] == ["cli_greet"]
    listed = keel_cli("--db", url, "runs", "list", "--json")
    assert len(json.loads(listed.stdout)["runs"]) == 1


def test_runs_list_paginates_and_filters(cwd: Path) -> None:
    url = db_url(cwd / "page.db")
    for i in range(3):
        assert keel_cli("start", "cli_greet", "--app", APP, f'"{i}"', "--db", url).exit_code == 0
    page = json.loads(keel_cli("runs", "list", "--limit", "2", "--json", "--db", url).stdout)
    assert len(page["runs"]) == 2 and page["next_cursor"]
    rest = keel_cli("runs", "list", "--cursor", page["next_cursor"], "--json", "--db", url)
    assert len(json.loads(rest.stdout)["runs"]) == 1
    table = keel_cli("runs", "list", "--limit", "2", "--db", url)
    assert table.exit_code == 0
    assert "cli_greet" in table.stdout and "pending" in table.stdout
    assert f"--cursor {page['next_cursor']}" in table.stdout
    assert "no runs match" in keel_cli("runs", "list", "--state", "failed", "--db", url).stdout
    assert keel_cli("runs", "list", "--state", "bogus", "--db", url).exit_code == 2
    assert_clean_error(keel_cli("runs", "list", "--cursor", "zzz", "--db", url), 2, "--cursor")


def test_failed_run_shows_error_and_traceback(cwd: Path) -> None:
    url = db_url(cwd / "fail.db")
    started = keel_cli("start", "cli_fail", "--app", APP, "3", "--db", url)
    run_id = started.stdout.strip()

    async def execute() -> None:
        async with keel.Worker(url, poll_interval=0.05) as worker:
            with pytest.raises(keel.RunFailedError):
                await worker.client().result(run_id, timeout=10)

    asyncio.run(execute())
    shown = keel_cli("runs", "show", run_id, "--db", url)
    assert shown.exit_code == 0, shown.output
    assert "failed" in shown.stdout
    assert "ValueError: boom 3" in shown.stdout
    assert "traceback:" in shown.stdout
    doc = json.loads(keel_cli("runs", "show", run_id, "--json", "--db", url).stdout)
    assert doc["state"] == "failed"
    assert doc["error"]["message"] == "boom 3"
    history = keel_cli("runs", "history", run_id, "--db", url).stdout
    assert "■" in history and "failed: ValueError: boom 3" in history
    failed = keel_cli("runs", "list", "--state", "failed", "--json", "--db", url).stdout
    assert [r["run_id"] for r in json.loads(failed)["runs"]] == [run_id]


# --- the demo, then every read view of what it wrote ----------------------------------------


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Result]]:
    """``keel demo --fast`` run twice in one fresh directory."""
    path = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(path)
        mp.delenv("KEEL_DATABASE_URL", raising=False)
        results = [keel_cli("demo", "--fast") for _ in range(2)]
    return path, results


def _run_id(demo: Result) -> str:
    hint = next(line for line in demo.stdout.splitlines() if line.startswith("inspect it again"))
    assert hint.endswith("--db keel-demo.db")
    return hint.split()[-3]


def test_demo_completes_and_prints_a_timeline(demo_runs: tuple[Path, list[Result]]) -> None:
    path, results = demo_runs
    for demo in results:
        assert demo.exit_code == 0, demo.output
        out = demo.stdout
        for fragment in (
            "reserve_inventory",
            "charge_payment",
            "attempt 1 failed: PaymentGatewayTimeout",
            "attempt 2 failed",
            "retry in 0.",
            "(attempt 3)",
            "sleep 0.8s",
            "run suspended",
            "signal:approve",
            "client sends signal 'approve'",
            "ship",
            "now",
            "completed →",
            '"status": "shipped"',
        ):
            assert fragment in out, fragment
    assert (path / "keel-demo.db").exists()
    assert _run_id(results[0]) != _run_id(results[1])  # re-runnable: a new run each time


def test_read_views_after_the_demo(demo_runs: tuple[Path, list[Result]]) -> None:
    path, results = demo_runs
    url = db_url(path / "keel-demo.db")
    run_id = _run_id(results[1])

    page = json.loads(keel_cli("runs", "list", "--json", "--db", url).stdout)
    assert page["next_cursor"] is None
    assert page["runs"][0]["run_id"] == run_id  # newest first
    run = page["runs"][0]
    assert set(run) == {
        "run_id", "workflow", "version", "state", "created_at", "updated_at", "wake_at",
        "cancel_requested", "lease_owner", "error", "parent_run_id", "depth",
        "chain_id", "continued_to", "waiting", "forked_from", "fork_seq", "forks",
    }  # fmt: skip
    assert run["workflow"] == "process_order" and run["state"] == "completed"
    assert (run["parent_run_id"], run["depth"]) == (None, 0)
    assert (run["chain_id"], run["continued_to"]) == (run_id, None)
    assert datetime.fromisoformat(run["created_at"]).tzinfo is not None

    shown = json.loads(keel_cli("runs", "show", run_id, "--json", "--db", url).stdout)
    assert shown["result"]["status"] == "shipped"
    assert shown["result"]["approved_by"] == "ops@example.com"
    assert shown["input"]["order"]["sku"] == "KEEL-MUG"

    history = json.loads(keel_cli("runs", "history", run_id, "--json", "--db", url).stdout)
    assert history["run_id"] == run_id
    events = history["events"]
    assert [e["seq"] for e in events] == list(range(len(events)))
    types = [e["type"] for e in events]
    assert types[0] == "run_started" and types[-1] == "run_completed"
    assert types.count("step_attempt_failed") == 2
    assert {"timer_started", "timer_fired", "signal_awaited", "signal_received"} <= set(types)
    steps = [e["name"] for e in events if e["type"] == "step_completed"]
    assert steps == ["reserve_inventory", "charge_payment", "ship"]
    assert all(datetime.fromisoformat(e["created_at"]) for e in events)

    timeline = keel_cli("runs", "history", run_id, "--db", url).stdout.splitlines()
    assert len(timeline) == len(events)
    assert timeline[0].split()[:3] == ["+0.000s", "▶", "run"]
    assert "✗" in timeline[2] and "retry in" in timeline[2]


def test_timeline_summaries() -> None:
    t0 = datetime(2030, 1, 1, tzinfo=UTC)

    def event(seq: int, type_: str, command: str | None, data: dict[str, Any]) -> HistoryEvent:
        kind, _, rest = (command or "").partition(":")
        name = rest.rpartition("#")[0] or None
        at = t0 + timedelta(seconds=seq / 2)
        return HistoryEvent(seq, type_, command, kind or None, name, data, at)

    timeline = Timeline()
    err = {"type": "builtins.OSError", "message": "x" * 200}
    rows = [
        event(0, "run_started", None, {"workflow": "w", "version": "abcdef0123", "input": {}}),
        event(
            1,
            "step_attempt_failed",
            "step:s#0",
            {"attempt": 1, "error": err, "retry_at": (t0 + timedelta(seconds=0.75)).timestamp()},
        ),
        event(2, "timer_started", "sleep:sleep#0", {"duration": 2, "fire_at": 0}),
        event(3, "signal_received", "signal:go#1", {"name": "go", "payload": [1]}),
    ]
    summaries = [timeline.summary(e) for e in rows]
    assert summaries[1].startswith("attempt 1 failed: OSError: xxx")
    assert summaries[1].endswith("…; retry in 0.25s")
    assert summaries[2] == "sleep 2.0s"
    assert summaries[3] == "received [1]"


# --- keel worker in a subprocess ------------------------------------------------------------


def _keel_command() -> list[str]:
    script = Path(sys.executable).parent / "keel"
    return [str(script)] if script.exists() else [sys.executable, "-m", "keel.cli"]


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.acceptance
def test_worker_serves_runs_and_drains_on_sigterm(cwd: Path, app_dir: Path) -> None:
    url = db_url(cwd / "w.db")
    log_path = cwd / "worker.log"
    env = {k: v for k, v in os.environ.items() if k != "KEEL_DATABASE_URL"}
    env["PYTHONPATH"] = os.pathsep.join([str(app_dir), env.get("PYTHONPATH", "")])
    args = [*_keel_command(), "worker", APP, "keel.demo_app", "--db", url]
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [*args, "--poll-interval", "0.05", "--lease-ttl", "5"],
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        _wait_for(lambda: " started: " in log_path.read_text(), 20, "the worker to start")
        assert "workflows=[cli_fail, cli_greet, cli_slow, process_order]" in log_path.read_text()

        greeted = keel_cli("start", "cli_greet", "--app", APP, '"ada"', "--wait", "--timeout",
                           "20", "--json", "--db", url)  # fmt: skip
        assert greeted.exit_code == 0, greeted.output
        assert json.loads(greeted.stdout)["result"] == "hello ada!"
        failed = keel_cli("start", "cli_fail", "--app", APP, "1", "--wait", "--timeout", "20",
                          "--db", url)  # fmt: skip
        assert_clean_error(failed, 1, "failed: builtins.ValueError: boom 1")

        # A step is in flight when SIGTERM arrives: the worker lets it finish, journals
        # it, releases the lease and exits 0.
        slow = keel_cli("start", "cli_slow", "--app", APP, "1.0", "--db", url).stdout.strip()

        def running() -> bool:
            shown = keel_cli("runs", "show", slow, "--json", "--db", url).stdout
            return bool(json.loads(shown)["state"] == "running")

        _wait_for(running, 10, "the slow run to be claimed")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log_path.read_text()
    assert "received SIGTERM: draining 1 run(s)" in text
    assert "stopped: drained in" in text
    assert "Traceback" not in text
    doc = json.loads(keel_cli("runs", "show", slow, "--json", "--db", url).stdout)
    assert doc["lease_owner"] is None
    assert doc["state"] in ("pending", "suspended")
    events = json.loads(keel_cli("runs", "history", slow, "--json", "--db", url).stdout)["events"]
    last = events[-1]  # the drained step's result; the next step was never started
    assert (last["type"], last["command"]) == ("step_completed", "step:nap#0")
