"""``keel signal --id``: a retry is a no-op; a run being cancelled refuses signals."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from click.testing import CliRunner, Result

import keel
from keel.cli.main import cli
from tests.integration._support import wait_state


@keel.workflow(name="cli_ids_waiter")
async def waiter() -> list[str]:
    return [await keel.wait_for_signal("go", type=str) for _ in range(3)]


def keel_cli(*args: str) -> Result:
    result = CliRunner().invoke(cli, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def suspended_run(path: Path, run_id: str) -> None:
    """Start ``run_id`` and let a worker take it to its first signal wait."""

    async def main() -> None:
        async with keel.Worker(f"sqlite:///{path}", poll_interval=0.05) as worker:
            await worker.client().start(waiter, run_id=run_id)
            await wait_state(worker.client(), run_id, keel.RunState.SUSPENDED)

    asyncio.run(main())


def test_signal_with_an_id_twice_sends_once(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'ids.db'}"
    suspended_run(tmp_path / "ids.db", "r1")
    first = keel_cli("signal", "r1", "go", '"a"', "--id", "pay-1", "--db", db)
    assert first.exit_code == 0, first.output
    assert first.stdout == "sent signal 'go' to run r1\n"
    again = keel_cli("signal", "r1", "go", '"a"', "--id", "pay-1", "--db", db)
    assert again.exit_code == 0, again.output
    assert again.stdout == "signal 'go' with id 'pay-1' was sent to run r1 before\n"

    with sqlite3.connect(tmp_path / "ids.db") as conn:
        rows = conn.execute("SELECT payload, delivery_id FROM signals WHERE run_id = 'r1'")
        assert rows.fetchall() == [(b'"a"', "pay-1")]


def test_signal_to_a_run_being_cancelled_fails_in_one_line(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'c.db'}"
    suspended_run(tmp_path / "c.db", "r1")
    requested = keel_cli("cancel", "r1", "--db", db)
    assert requested.exit_code == 0 and "cancel requested" in requested.stdout
    refused = keel_cli("signal", "r1", "go", '"late"', "--db", db)
    assert refused.exit_code == 1
    assert refused.stderr == "error: cannot signal run 'r1': it is being cancelled\n"
    assert refused.stdout == ""
