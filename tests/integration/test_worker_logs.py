"""What the worker logs when things go wrong: each failed step attempt
(WARNING), each failed run (ERROR) and each parked run (WARNING), with the
run id, the workflow, the step and the attempt. (Lost leases: see
test_lease_loss.py; abandoned attempts at drain: the acceptance tests.)"""

from __future__ import annotations

import logging
from typing import Any

import pytest

import keel
from keel.workflow.registry import Registry
from tests.integration._support import wait_until

failures: dict[str, int] = {}


@keel.step(
    name="logs.flaky",
    retry=keel.RetryPolicy(max_attempts=3, initial_interval=0.01, jitter=0.0),
)
def flaky(key: str) -> str:
    failures[key] = failures.get(key, 0) + 1
    if failures[key] == 1:
        raise ValueError(f"flaky failure of {key}")
    return "ok"


@keel.step(
    name="logs.broken",
    retry=keel.RetryPolicy(max_attempts=2, initial_interval=0.01, jitter=0.0),
)
def broken() -> str:
    raise RuntimeError("the disk is on fire")


@keel.workflow(name="logs.retries")
async def retries(key: str) -> str:
    return str(await flaky(key))


@keel.workflow(name="logs.fails")
async def fails() -> str:
    return str(await broken())


def _fields(caplog: pytest.LogCaptureFixture, level: int, run_id: str) -> list[dict[str, Any]]:
    """The structured fields (see keel.observe.logs) of the records about ``run_id``."""
    names = ("run_id", "workflow", "step", "attempt")
    return [
        {n: r.__dict__[n] for n in names if n in r.__dict__}
        for r in caplog.records
        if r.levelno == level and r.__dict__.get("run_id") == run_id
    ]


def _records(caplog: pytest.LogCaptureFixture, level: int, *needles: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("keel.worker")
        and r.levelno == level
        and all(n in r.getMessage() for n in needles)
    ]


async def test_a_failed_attempt_is_logged_with_its_retry(
    env: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="keel.worker")
    failures.clear()
    async with env() as (client, _):
        run = await client.start(retries, "k")
        assert await run.result(timeout=10) == "ok"
    (line,) = _records(caplog, logging.WARNING, run.run_id)
    assert "logs.retries" in line  # the workflow
    assert "'logs.flaky' attempt 1/3 failed" in line
    assert "ValueError: flaky failure of k" in line
    assert "retrying in 0.01s" in line
    assert not _records(caplog, logging.ERROR)
    assert _fields(caplog, logging.WARNING, run.run_id) == [
        {"run_id": run.run_id, "workflow": "logs.retries", "step": "logs.flaky", "attempt": 1}
    ]


async def test_a_failed_run_is_logged_as_an_error(
    env: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="keel.worker")
    async with env() as (client, _):
        run = await client.start(fails)
        with pytest.raises(keel.RunFailedError):
            await run.result(timeout=10)
    attempts = _records(caplog, logging.WARNING, run.run_id, "logs.fails", "'logs.broken'")
    assert len(attempts) == 2, attempts
    assert "attempt 1/2 failed: RuntimeError: the disk is on fire; retrying in" in attempts[0]
    assert "attempt 2/2 failed: RuntimeError: the disk is on fire; no attempts left" in attempts[1]
    (line,) = _records(caplog, logging.ERROR, run.run_id)
    assert "logs.fails" in line and "failed" in line
    assert "RuntimeError: the disk is on fire" in line
    assert _fields(caplog, logging.ERROR, run.run_id) == [
        {"run_id": run.run_id, "workflow": "logs.fails"}
    ]
    assert [f["attempt"] for f in _fields(caplog, logging.WARNING, run.run_id)] == [1, 2]


async def test_a_parked_run_is_logged(make_store: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A worker that holds a run of a version it lacks parks it, and says so.

    Claims skip such runs, so the run is claimed here without a version filter
    (what parking remains the fallback for)."""
    caplog.set_level(logging.INFO, logger="keel.worker")
    other = Registry()

    @keel.workflow(name="logs.retries", version="v-other", registry=other)
    async def retries_elsewhere(key: str) -> str:
        return key

    store = make_store()
    async with keel.Worker(store, registry=other, poll_interval=0.05) as worker:
        run = await keel.Client(store).start(retries, "p")
        [claimed] = await worker.store.runs.claim(worker.owner, limit=1, ttl=5.0)
        worker.adopt(claimed)
        await wait_until(
            lambda: _records(caplog, logging.WARNING, run.run_id), "the run to be parked"
        )
        assert worker.active_runs == []
    (line,) = _records(caplog, logging.WARNING, run.run_id)
    assert "'logs.retries'" in line and "parked" in line
    assert retries.version in line and "v-other" in line  # missing, and what is loaded
    assert _fields(caplog, logging.WARNING, run.run_id) == [
        {"run_id": run.run_id, "workflow": "logs.retries"}
    ]
