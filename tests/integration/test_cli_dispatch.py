"""``keel worker --queue``: dispatched steps run by a worker subprocess serving the queue."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from keel.cli.main import cli

APP = "keel_cli_dispatch_app"
APP_SOURCE = '''
    """A workflow with a dispatched step."""
    import keel


    @keel.step(name="cli_dispatch.render", queue="gpu")
    def render(frame: int) -> str:
        return f"frame {frame} rendered"


    @keel.workflow(name="cli_dispatch")
    async def movie(frames: int) -> list[str]:
        return [await render(i) for i in range(frames)]
'''


@pytest.mark.parametrize(
    ("spec", "message"),
    [("gpu=0", "LIMIT must be a positive integer"), ("gpu=x", "LIMIT"), ("=2", "queue name"),
     ("a#b", "queue name")],
)  # fmt: skip
def test_bad_queue_option_is_a_usage_error(spec: str, message: str) -> None:
    result = CliRunner().invoke(cli, ["worker", "keel.demo_app", "--queue", spec])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_queue_given_twice_is_a_usage_error() -> None:
    result = CliRunner().invoke(
        cli, ["worker", "keel.demo_app", "--queue", "gpu", "--queue", "gpu=2"]
    )
    assert result.exit_code == 2 and "given twice" in result.output


@pytest.mark.acceptance
def test_worker_with_queue_runs_dispatched_steps(tmp_path: Path) -> None:
    (tmp_path / f"{APP}.py").write_text(textwrap.dedent(APP_SOURCE))
    url = f"sqlite:///{tmp_path / 'd.db'}"
    env = {k: v for k, v in os.environ.items() if k != "KEEL_DATABASE_URL"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    log_path = tmp_path / "worker.log"
    base = [sys.executable, "-m", "keel.cli"]
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [*base, "worker", APP, "--db", url, "--poll-interval", "0.05",
             "--queue", "gpu=2", "--queue", "other", "--task-concurrency", "3"],
            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while " started: " not in log_path.read_text():
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        assert "queues=[gpu=2, other=3]" in log_path.read_text()
        started = subprocess.run(
            [*base, "start", "cli_dispatch", "3", "--app", APP, "--db", url, "--wait",
             "--timeout", "20"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        assert '"frame 2 rendered"' in started.stdout
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in log_path.read_text()


def test_queues_limit_and_list(tmp_path: Path) -> None:
    db = str(tmp_path / "q.db")
    runner = CliRunner()
    result = runner.invoke(cli, ["--db", db, "queues", "limit", "gpu", "3"])
    assert result.exit_code == 0 and "at most 3" in result.output, result.output
    result = runner.invoke(cli, ["--db", db, "queues", "list", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [
        {"queue": "gpu", "concurrency": 3, "available": 0, "leased": 0}
    ]
    table = runner.invoke(cli, ["--db", db, "queues", "list"]).output
    assert table.split("\n")[1].split() == ["gpu", "3", "0", "0"]
    result = runner.invoke(cli, ["--db", db, "queues", "limit", "gpu", "0"])
    assert result.exit_code == 0 and "paused" in result.output
    table = runner.invoke(cli, ["--db", db, "queues", "list"]).output
    assert table.split("\n")[1].split() == ["gpu", "0", "0", "0"]
    result = runner.invoke(cli, ["--db", db, "queues", "limit", "gpu", "none"])
    assert result.exit_code == 0 and "no limit" in result.output
    assert "no queues" in runner.invoke(cli, ["--db", db, "queues", "list"]).output


@pytest.mark.parametrize(
    ("args", "message"),
    [(["gpu", "1.5"], "LIMIT must be"), (["gpu", "many"], "LIMIT must be"),
     (["a#b", "2"], "queue name"), (["", "2"], "queue name")],
)  # fmt: skip
def test_bad_queue_limit_is_a_usage_error(tmp_path: Path, args: list[str], message: str) -> None:
    db = str(tmp_path / "q.db")
    result = CliRunner().invoke(cli, ["--db", db, "queues", "limit", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    listed = CliRunner().invoke(cli, ["--db", db, "queues", "list"])
    assert "no queues" in listed.output or "no Keel database" in listed.output
