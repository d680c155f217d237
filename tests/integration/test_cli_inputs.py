"""Bad input to ``keel`` never prints a traceback: one ``error: ...`` line, a
non-zero exit, nothing written; and ``keel start --wait`` never loses the run id."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.acceptance.harness import KEEL_CMD, REPO
from tests.integration.test_cli import APP, app_dir, assert_clean_error, cwd, keel_cli

__all__ = ["app_dir", "cwd"]  # fixtures

ORDER = '{"order_id": "T-1", "sku": "MUG", "quantity": 1, "amount_cents": 100}'


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
    return lines[0]


def test_deep_and_huge_json_arguments_are_refused(cwd: Path) -> None:
    start = ("start", "cli_greet", "--app", APP)
    deep = "[" * 1000 + "]" * 1000
    assert_clean_error(keel_cli(*start, deep), 2, "argument 1 ('name')", "nested more than")
    assert_clean_error(keel_cli(*start, "[" * 150 + "]" * 150), 2, "nested more than 100")
    assert_clean_error(keel_cli(*start, "1" * 5000), 2, "argument 1", "4300 digits")
    assert_clean_error(keel_cli(*start, '"x"', "--kwarg", f"punctuation={deep}"), 2, "--kwarg")
    assert not (cwd / "keel.db").exists()
    keel_cli(*start, '"x"', "--run-id", "r1")  # creates the database
    assert_clean_error(keel_cli("signal", "r1", "go", deep), 2, "PAYLOAD_JSON", "nested")


def test_arguments_that_are_not_utf8_are_refused(cwd: Path) -> None:
    bad = "\udcff"  # how a \xff byte on the command line reaches Python
    keel_cli("start", "cli_greet", "--app", APP, '"x"', "--run-id", "r1")
    for args in (
        ("runs", "show", bad),
        ("runs", "history", f"r{bad}"),
        ("cancel", bad),
        ("signal", "r1", bad),
        ("start", "cli_greet", "--app", APP, '"x"', "--run-id", bad),
        ("runs", "list", "-w", bad),
    ):
        assert_clean_error(keel_cli(*args), 2, "b'", "not valid UTF-8")


def test_empty_db_is_refused(cwd: Path) -> None:
    for args in (("runs", "list", "--db", ""), ("--db", " ", "runs", "list")):
        assert_clean_error(keel_cli(*args), 2, "--db", "empty")
    result = keel_cli("start", "cli_greet", "--app", APP, '"x"', "--db", "")
    assert_clean_error(result, 2, "--db")
    assert not (cwd / "keel.db").exists()


def test_an_empty_database_url_in_the_environment_is_refused(cwd: Path) -> None:
    for empty in ("", "  "):
        result = keel_cli("runs", "list", env={"KEEL_DATABASE_URL": empty})
        assert_clean_error(result, 2, "KEEL_DATABASE_URL", "empty")
    assert not (cwd / "keel.db").exists()


def test_file_errors_and_overflowing_values(cwd: Path) -> None:
    keel_cli("start", "cli_greet", "--app", APP, '"x"', "--run-id", "r1")
    (cwd / "afile").write_text("")
    result = keel_cli("runs", "export", "r1", "-o", str(cwd / "afile" / "out"))
    assert_clean_error(result, 1, str(cwd / "afile" / "out"), "Not a directory")
    for value in ("99999999999w", "1e400d"):
        assert_clean_error(keel_cli("runs", "export", "--since", value, "-o", "x"), 2, "--since")
    for extreme in ("0001-01-01T00:00", "9999-12-31T23:59:59"):
        for local in ((), ("--local",)):
            result = keel_cli("runs", "list", "--since", extreme, *local)
            assert result.exit_code in (0, 2) and "Traceback" not in result.output, result.output


def test_bad_module_names_and_queue_limits(cwd: Path) -> None:
    for name in ("", " ", "a..b", "os/path"):
        result = keel_cli("start", "cli_greet", "--app", name, '"x"')
        assert_clean_error(result, 2, "not a module name")
        assert len(result.stderr.splitlines()) == 1, result.stderr
    for limit in ("9" * 30, "²", "2147483648"):
        result = keel_cli("queues", "limit", "gpu", limit)
        assert_clean_error(result, 2, "LIMIT must be")
    assert not (cwd / "keel.db").exists()


def test_usage_errors_are_one_line(cwd: Path) -> None:
    keel_cli("start", "cli_greet", "--app", APP, '"x"', "--run-id", "r1")
    for args in (
        ("runs", "list", "--limit", "0"),
        ("runs", "list", "--bogus"),
        ("runs", "nope"),
        ("--nope",),
        ("start",),
        ("runs", "list", "-s", "sleeping"),
    ):
        result = keel_cli(*args)
        assert result.exit_code == 2, result.output
        line = one_line(result.stderr)
        assert "--help" in line, line  # where to read more


# --- start --wait: the run id comes first -----------------------------------------------


def _start(cwd: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{cwd.parent}", "NO_COLOR": "1"}
    env.pop("KEEL_DATABASE_URL", None)
    return subprocess.Popen(
        [*KEEL_CMD, "start", "cli_slow", "0", "--app", APP, "--wait", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_start_wait_keeps_the_run_id_on_ctrl_c(cwd: Path, app_dir: Path, as_json: bool) -> None:
    """No worker runs, so it waits until SIGINT; the id is on stdout all the same."""
    (cwd / "keel_cli_testapp.py").write_text((app_dir / "keel_cli_testapp.py").read_text())
    proc = _start(cwd, "--run-id", "kept", *(["--json"] if as_json else []))
    try:
        deadline = time.monotonic() + 30
        db = cwd / "keel.db"
        while not (db.exists() and "kept" in keel_cli("runs", "list", "--db", str(db)).stdout):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run was never created"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err
    if as_json:
        doc = json.loads(out)
        assert next(iter(doc)) == "run_id" and doc["run_id"] == "kept", out
        assert "stopped waiting" in doc["error"]
    else:
        assert out.splitlines()[0] == "kept", out
    assert "kept" in one_line(err)


def test_start_wait_keeps_the_run_id_on_failure_and_timeout(cwd: Path) -> None:
    result = keel_cli("start", "cli_slow", "0", "--app", APP, "--wait", "--timeout", "0.2",
                      "--run-id", "slow-1")  # fmt: skip
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0] == "slow-1"
    one_line(result.stderr)
    result = keel_cli("start", "cli_slow", "0", "--app", APP, "--wait", "--timeout", "0.2",
                      "--run-id", "slow-2", "--json")  # fmt: skip
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert next(iter(doc)) == "run_id" and doc["run_id"] == "slow-2" and doc["error"], doc
    one_line(result.stderr)


def test_real_command_lines_with_bad_bytes_and_values(cwd: Path, app_dir: Path) -> None:
    """The same refusals through a real ``keel`` process and real argv bytes."""
    keel_cli("start", "cli_greet", "--app", APP, '"x"', "--run-id", "r1")
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{app_dir}", "NO_COLOR": "1"}
    env.pop("KEEL_DATABASE_URL", None)
    deep = b"[" * 1000 + b"]" * 1000
    for args in (
        [b"runs", b"show", b"\xff"],
        [b"cancel", b"r\xfe1"],
        [b"signal", b"r1", b"go", deep],
        [b"start", b"cli_greet", b"--app", APP.encode(), deep],
        [b"runs", b"list", b"--db", b""],
        [b"runs", b"export", b"r1", b"-o", b"keel.db/out"],
    ):
        proc = subprocess.run(
            [*(a.encode() for a in KEEL_CMD), *args],
            cwd=cwd, env=env, capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        assert proc.returncode != 0, args
        one_line(proc.stderr.decode(errors="replace"))
    assert "r1" in keel_cli("runs", "list").stdout  # nothing was changed


def test_durations_must_be_finite_numbers_of_seconds(cwd: Path) -> None:
    start = ("start", "cli_greet", "--app", APP, '"x"', "--wait")
    for value in ("nan", "inf", "1e400", "-inf"):
        assert_clean_error(keel_cli(*start, "--timeout", value), 2, "--timeout", "finite")
    worker = ("worker", APP)
    for option in ("--lease-ttl", "--poll-interval", "--drain-timeout"):
        assert_clean_error(keel_cli(*worker, option, "nan"), 2, option, "finite")
    assert not (cwd / "keel.db").exists()  # refused before anything was opened
