"""The example apps in examples/ run as they stand, as a new user runs them:
``python examples/quickstart.py`` in a fresh directory, and again."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(name: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_readme_first_example_runs_twice_in_a_row(tmp_path: Path) -> None:
    first = run_example("quickstart.py", tmp_path)
    assert (first.returncode, first.stderr) == (0, ""), first.stderr
    result = "charged 9.99 (idempotency key order-o-1:step:charge#0); order o-1 shipped\n"
    assert first.stdout == result
    second = run_example("quickstart.py", tmp_path)
    assert (second.returncode, second.stderr) == (0, ""), second.stderr
    assert second.stdout == result + "run order-o-1 existed already: nothing ran twice\n"
    with sqlite3.connect(tmp_path / "orders.db") as conn:
        runs = conn.execute("SELECT run_id, state FROM runs").fetchall()
        signals = conn.execute("SELECT count(*) FROM signals").fetchone()
    assert runs == [("order-o-1", "completed")]
    assert signals == (1,)  # the second run's signal was a repeat: nothing stored


@pytest.mark.parametrize("name", ["fan_out.py", "approvals.py"])
def test_the_other_examples_run(tmp_path: Path, name: str) -> None:
    done = run_example(name, tmp_path)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert "refused: " in done.stdout  # each shows a clear refusal of bad input


def test_the_graph_example_runs_twice_in_a_row(tmp_path: Path) -> None:
    result = "{'alert_finance': 'finance alerted: 24000', 'pay': 'paid 24000'}\n"
    for _ in range(2):  # the second time: the run exists, the approval is a repeat
        done = run_example("graph_invoices.py", tmp_path)
        assert (done.returncode, done.stderr, done.stdout) == (0, "", result)
    with sqlite3.connect(tmp_path / "invoices.db") as conn:
        runs = conn.execute("SELECT run_id, state FROM runs").fetchall()
        signals = conn.execute("SELECT count(*) FROM signals").fetchone()
    assert runs == [("batch-b-42", "completed")]
    assert signals == (1,)
