"""A PostgreSQL server restart under load: ``keel worker`` processes ride it out.

The test restarts the local server (``pg_ctlcluster ... restart``, as root on
the development and CI machines; ``KEEL_TEST_POSTGRES_RESTART`` names another
command) while runs are in flight, and always leaves the server up again.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from subprocess import DEVNULL

import psycopg
import pytest

from tests import pg
from tests.acceptance.apps import pg_flows
from tests.acceptance.harness import Harness, WorkerProcess, step_completions
from tests.pg import pg_url, postgres_server  # noqa: F401  (fixtures)

pytestmark = pytest.mark.acceptance

PG_FLOWS = "tests.acceptance.apps.pg_flows"
RESTART_ENV = "KEEL_TEST_POSTGRES_RESTART"
CLUSTER = ["pg_ctlcluster", "--skip-systemctl-redirect", "15", "main"]


@pytest.fixture(autouse=True)
def _alone() -> None:
    """The restart cuts every connection to the shared server: no other test may
    run meanwhile, so never on several pytest-xdist workers (`make test` runs
    this module by itself, after the parallel run)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        pytest.fail(
            f"{__name__} restarts the PostgreSQL server: run it alone, not on {workers} "
            "xdist workers (pytest tests/acceptance/test_pg_restart.py)",
            pytrace=False,
        )


@pytest.fixture
def harness(tmp_path: Path, pg_url: str) -> Iterator[Harness]:  # noqa: F811
    h = Harness(tmp_path, db_url=pg_url)
    try:
        yield h
    finally:
        h.cleanup()


def ready(proc: WorkerProcess) -> bool:
    return " started: " in proc.err.read_text(errors="replace")


def restart_command() -> list[str]:
    """How to restart the test server; skips (fails under CI) if that is impossible here."""
    command = shlex.split(os.environ.get(RESTART_ENV, "")) or [*CLUSTER, "restart"]
    reason = None
    if shutil.which(command[0]) is None:
        reason = f"{command[0]!r} is not installed"
    elif command[0] == "pg_ctlcluster" and os.geteuid() != 0:
        reason = "pg_ctlcluster restart needs root"
    if reason is not None:
        msg = f"cannot restart the PostgreSQL server ({reason}); set {RESTART_ENV}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {msg}", pytrace=False)
        pytest.skip(f"SKIPPING the restart test: {msg}")
    return command


async def accepting(url: str) -> bool:
    try:
        conn = await psycopg.AsyncConnection.connect(url, connect_timeout=2)
    except psycopg.Error:
        return False
    await conn.close()
    return True


async def ensure_up(url: str) -> None:
    """Wait until the server accepts connections; start it if it stays down."""
    for attempt in range(2):
        deadline = time.monotonic() + (10.0 if attempt == 0 else 50.0)
        while time.monotonic() < deadline:
            if await accepting(url):
                return
            await asyncio.sleep(0.1)
        if attempt == 0:
            proc = await asyncio.create_subprocess_exec(
                *CLUSTER, "start", stdout=DEVNULL, stderr=DEVNULL
            )
            await proc.wait()
    raise RuntimeError("the PostgreSQL server did not come back up")


async def states(harness: Harness) -> Counter[str] | None:
    """How many runs are in each state; ``None`` while the server is unreachable."""
    try:
        rows = await harness.sql("SELECT state, count(*) FROM keel.runs GROUP BY state")
    except psycopg.Error:
        return None
    return Counter({state: int(count) for state, count in rows})


@pytest.mark.timeout(180)
async def test_workers_ride_out_a_server_restart(harness: Harness) -> None:
    """60 runs of a 4-step workflow on two workers (lease TTL 3 s); restart the
    server while runs are in flight: both workers stay up and reconnect, every
    run completes with the right result, and no step is journaled twice."""
    command = restart_command()
    n = 60
    run_ids = [f"restart-{i:02d}" for i in range(n)]
    workers = tuple(
        harness.worker(PG_FLOWS, lease_ttl=3.0, concurrency=5, poll_interval=0.05) for _ in range(2)
    )
    await harness.wait_for(lambda: all(map(ready, workers)), "two workers", alive=workers)
    async with harness.client() as client:
        await asyncio.gather(
            *(client.start(pg_flows.chain, i, 4, "", 200, run_id=r) for i, r in enumerate(run_ids))
        )
    # The fixtures clone spare databases in the background: let them finish,
    # or the restart would break them for the next test.
    for spare in list(pg._state.spares):
        await asyncio.wrap_future(spare)

    async def part_way() -> Counter[str] | None:
        counts = await states(harness)
        return counts if counts and counts["completed"] >= 8 else None

    at_restart = await harness.wait_for(part_way, "8 runs to complete", alive=workers)
    assert at_restart["running"] > 0, f"nothing in flight at the restart: {at_restart}"
    assert at_restart["completed"] < n - 20, f"too late for the restart: {at_restart}"
    t0 = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0, f"{shlex.join(command)} failed: {out.decode()}"
    finally:
        await ensure_up(harness.db_url)
    restart_took = time.monotonic() - t0

    async def all_done() -> bool:
        counts = await states(harness)
        return counts is not None and counts["completed"] + counts["failed"] == n

    await harness.wait_for(all_done, f"{n} runs to finish after the restart", 60, alive=workers)
    async with harness.client() as client:
        infos = {r: await client.get(r) for r in run_ids}
        results = {r: await client.result(r) for r in run_ids}
        histories = {r: await client.history(r) for r in run_ids}

    bad = {r: (i.state, i.error) for r, i in infos.items() if i.state != "completed"}
    assert not bad, bad
    assert results == {r: pg_flows.chain_expected(i, 4) for i, r in enumerate(run_ids)}
    runs = harness.started()
    for run_id, history in histories.items():
        assert step_completions(history) == Counter(dict.fromkeys(pg_flows.CHAIN, 1)), run_id
        seqs = [e.seq for e in history]
        assert seqs == list(range(len(seqs))), f"{run_id}: journal has gaps: {seqs}"
        types = [e.type for e in history]
        assert types.count("run_completed") == 1 and types[-1] == "run_completed", run_id
        for step in pg_flows.CHAIN:
            assert runs[(run_id, step)] >= 1, (run_id, step)
    for proc in workers:
        assert proc.alive(), f"a worker exited on the restart\n{proc.output()}"
        # The restart really cut them off, and they reconnected.
        assert "re-established" in proc.err.read_text(), proc.output()
    assert restart_took < 30
