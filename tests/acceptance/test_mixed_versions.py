"""A mixed fleet: two `keel worker` processes with different versions of one
workflow share a database (SQLite, then PostgreSQL). Each run is claimed only
by the worker that has its version (no parking, no bouncing), and `keel runs
show` explains a run that no live worker can take."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.harness import APPS, Harness
from tests.pg import pg_url, postgres_server  # noqa: F401  (fixtures)

# About 24 `keel` subprocesses per test: on a loaded 2-core machine each
# `import keel` alone can take 2 s, so the suite's 60 s default is too tight.
pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(180)]

DEPLOY1 = f"{APPS}.orders_deploy1"  # acc.orders, version 1 only
DEPLOY2 = f"{APPS}.orders_deploy2"  # acc.orders, version 2 only


@pytest.fixture(params=["sqlite", "postgres"])
def fleet(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    h = Harness(tmp_path, db_url=url)
    try:
        yield h
    finally:
        h.cleanup()


def show(harness: Harness, run_id: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(
        harness.cli_ok("runs", "show", run_id, "--db", harness.db_url, "--json")
    )
    return doc


def live_versions(harness: Harness) -> set[tuple[str, str, int]]:
    rows = json.loads(harness.cli_ok("versions", "list", "--db", harness.db_url, "--json"))
    return {(r["workflow"], r["version"], r["pid"]) for r in rows}


async def test_each_run_is_claimed_only_by_the_worker_with_its_version(fleet: Harness) -> None:
    db = ("--db", fleet.db_url)
    fleet.cli_ok("start", "acc.orders", '"probe"', "--app", DEPLOY1, "--run-id", "v1-0", *db)
    fleet.cli_ok("start", "acc.orders", '"probe"', "--app", DEPLOY2, "--run-id", "v2-0", *db)
    v1, v2 = show(fleet, "v1-0")["version"], show(fleet, "v2-0")["version"]
    assert v1 != v2
    w1, w2 = fleet.worker(DEPLOY1), fleet.worker(DEPLOY2)
    await fleet.wait_for(
        lambda: live_versions(fleet) == {("acc.orders", v1, w1.pid), ("acc.orders", v2, w2.pid)},
        "both workers to record their versions",
        alive=(w1, w2),
    )
    runs = {"v1-0": v1, "v2-0": v2}
    for i in range(1, 5):  # interleaved, so every claim sees runs of both versions due
        for app, version, prefix in ((DEPLOY1, v1, "v1"), (DEPLOY2, v2, "v2")):
            run_id = f"{prefix}-{i}"
            fleet.cli_ok("start", "acc.orders", f'"o-{i}"', "--app", app, "--run-id", run_id, *db)
            runs[run_id] = version
    for run_id in runs:  # each run is claimed again after its signal
        fleet.cli_ok("signal", run_id, "approve", '"ana"', *db)
    async with fleet.client() as client:
        infos = await fleet.wait_finished(client, list(runs), alive=(w1, w2))
        results = {r: await client.result(r) for r in runs}

    assert {r: i.state.value for r, i in infos.items()} == dict.fromkeys(runs, "completed")
    for run_id, version in runs.items():
        order = "probe" if run_id.endswith("-0") else f"o-{run_id[-1]}"
        wrapped = ", wrapped" if version == v2 else ""
        assert results[run_id] == f"shipped (prepared {order}{wrapped}, approved by ana)"
    pids = {w1.pid: v1, w2.pid: v2}
    for e in fleet.executions():  # every step ran in the worker that has the run's version
        assert pids[e.pid] == runs[e.run_id], e
    assert {e.run_id for e in fleet.executions()} == set(runs)
    for w in (w1, w2):
        assert "parked it" not in w.err.read_text(), w.output()

    # Deploy 1's worker stops: nobody has version 1 any more.
    w1.terminate()
    assert w1.wait(timeout=15) == 0, w1.output()
    assert live_versions(fleet) == {("acc.orders", v2, w2.pid)}  # it forgot its versions
    fleet.cli_ok("start", "acc.orders", '"late"', "--app", DEPLOY1, "--run-id", "stuck", *db)
    fleet.cli_ok("start", "acc.orders", '"after"', "--app", DEPLOY2, "--run-id", "later", *db)
    fleet.cli_ok("signal", "later", "approve", '"bo"', *db)
    async with fleet.client() as client:
        # "later" was due after "stuck": once it is done, w2 has passed "stuck" over.
        await fleet.wait_finished(client, ["later"], alive=(w2,))
    stuck = show(fleet, "stuck")
    reason = f"no worker has version {v1} of acc.orders (live versions: {v2})"
    assert stuck["state"] == "pending" and stuck["lease_owner"] is None, stuck
    assert stuck["waiting"] == reason
    text = fleet.cli_ok("runs", "show", "stuck", *db)
    assert "waiting" in text and reason in " ".join(text.split()), text
    assert show(fleet, "later")["waiting"] is None
    assert "parked it" not in w2.err.read_text(), w2.output()
    w2.terminate()
    assert w2.wait(timeout=15) == 0, w2.output()
