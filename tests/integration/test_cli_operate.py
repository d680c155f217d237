"""``keel runs terminate|resume|retry|fork|prune``: one run or a selection (count
first, confirm unless --yes, --dry-run), one-line errors, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import keel
from keel.core.states import RunState
from keel.store.ports import Finish, Turn
from keel.testing.conformance_helpers import event, leased, new_run
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


def populate(url: str) -> None:
    """a0..a2 pending (workflow a); f0 failed after one step (workflow f)."""

    async def go() -> None:
        async with keel.Client(url) as client:
            for i in range(3):
                await client.store.runs.create(new_run(f"a{i}", "a"))
            lease = await leased(client.store, "f0")
            failed = Finish(RunState.FAILED, error=b'{"type":"x.E","message":"boom"}')
            await client.store.runs.commit(lease, Turn(1, [event(1)], end=failed))

    asyncio.run(go())


def state_of(url: str, run_id: str) -> str:
    result = keel_cli("runs", "show", run_id, "--json", "--db", url)
    assert result.exit_code == 0, result.output
    return str(json.loads(result.stdout)["state"])


def test_terminate_one_run_then_a_selection(url: str) -> None:
    populate(url)
    result = keel_cli("runs", "terminate", "a0", "--reason", "stuck", "--db", url)
    assert result.exit_code == 0 and result.stdout == "run a0 terminated\n"
    assert state_of(url, "a0") == "terminated"
    assert_clean_error(keel_cli("runs", "terminate", "a0", "--db", url), 1, "already terminated")

    dry = keel_cli("runs", "terminate", "-w", "a", "--dry-run", "--db", url)
    assert dry.exit_code == 0 and dry.stdout == "would terminate 3 runs (dry run: nothing done)\n"
    asked = keel_cli("runs", "terminate", "-w", "a", "--db", url)  # no answer: aborted
    assert asked.exit_code == 1 and "terminate 3 runs?" in asked.stderr
    assert state_of(url, "a1") == "pending"
    done = keel_cli("runs", "terminate", "-w", "a", "--yes", "--db", url)
    assert done.exit_code == 0, done.output
    lines = done.stdout.splitlines()
    assert lines[0] == "terminated 2 of 3 runs; 1 refused"
    assert lines[1].startswith("  a0: cannot terminate run 'a0': it is already terminated")
    assert state_of(url, "a2") == "terminated"


def test_selection_needs_ids_or_filters(url: str) -> None:
    populate(url)
    assert_clean_error(keel_cli("runs", "resume", "--db", url), 2, "name the runs")
    assert_clean_error(keel_cli("runs", "resume", "a0", "-w", "a", "--db", url), 2, "or filters")


def test_resume_retry_and_fork(url: str) -> None:
    populate(url)
    result = keel_cli("runs", "resume", "a0", "--db", url)
    assert result.exit_code == 0 and "run a0 resumed (pending, due now)" in result.stdout
    assert_clean_error(keel_cli("runs", "resume", "f0", "--db", url), 1, "already failed")

    retried = keel_cli("runs", "retry", "f0", "--version", "v2", "--run-id", "f0-b", "--db", url)
    assert retried.exit_code == 0, retried.output
    assert retried.stdout == "run f0 retried as f0-b (journal copied below seq 2)\n"
    shown = json.loads(keel_cli("runs", "show", "f0-b", "--json", "--db", url).stdout)
    assert (shown["forked_from"], shown["fork_seq"], shown["version"]) == ("f0", 2, "v2")
    original = json.loads(keel_cli("runs", "show", "f0", "--json", "--db", url).stdout)
    assert original["forks"] == ["f0-b"] and original["state"] == "failed"
    no_version = keel_cli("runs", "retry", "f0", "--db", url)  # workflow f is nowhere
    assert_clean_error(no_version, 1, "say which version")

    forked = keel_cli("runs", "fork", "f0", "--at", "1", "--version", "v2", "--db", url)
    assert forked.exit_code == 0 and "journal copied below seq 1" in forked.stdout
    bad = keel_cli("runs", "fork", "f0", "--at", "step:nope#0", "--version", "v2", "--db", url)
    assert_clean_error(bad, 1, "no command 'step:nope#0'")


def test_prune(url: str) -> None:
    populate(url)
    keel_cli("runs", "terminate", "a0", "--db", url)
    dry = keel_cli("runs", "prune", "--older-than", "30d", "--dry-run", "--db", url)
    assert dry.exit_code == 0 and dry.stdout == "would delete 0 runs (dry run: nothing done)\n"
    old = keel_cli("runs", "prune", "--older-than", "0.001s", "--dry-run", "--db", url)
    assert old.stdout == "would delete 2 runs (dry run: nothing done)\n"
    only = keel_cli("runs", "prune", "--older-than", "0.001s", "-s", "failed", "-y", "--db", url)
    assert only.exit_code == 0 and only.stdout == "deleted 1 run\n"
    assert_clean_error(keel_cli("runs", "show", "f0", "--db", url), 1, "f0")
    assert state_of(url, "a0") == "terminated"
    bad = keel_cli("runs", "prune", "--older-than", "soon", "--db", url)
    assert bad.exit_code == 2 and "--older-than" in bad.stderr


def test_worker_retain_takes_an_age(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keel.db'}"
    result = keel_cli("worker", "keel.demo_app", "--retain", "soon", "--db", url)
    assert_clean_error(result, 2, "--retain")
    assert not (tmp_path / "keel.db").exists()
