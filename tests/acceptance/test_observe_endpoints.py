"""``keel worker --metrics-port`` serves a Prometheus exposition, /healthz and
/readyz; ``--log-format json`` writes one JSON object per line.

A real worker process on a real SQLite file; the exposition is parsed with
prometheus_client's parser.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import keel
from tests.acceptance.apps import observed
from tests.acceptance.harness import APPS, Harness, WorkerProcess

pytestmark = pytest.mark.acceptance

APP = f"{APPS}.observed"


def _get(port: int, path: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def _json_lines(proc: WorkerProcess) -> list[dict[str, Any]]:
    """Every line the worker wrote to stderr, each parsed as one JSON object."""
    lines = proc.err.read_text().splitlines()
    return [json.loads(line) for line in lines if line]


async def _metrics_address(harness: Harness, proc: WorkerProcess) -> tuple[str, int]:
    def probe() -> tuple[str, int] | None:
        for record in _json_lines(proc):
            found = re.search(r"on http://([^:]+):(\d+)", record["message"])
            if found:
                return found.group(1), int(found.group(2))
        return None

    address: tuple[str, int] = await harness.wait_for(
        probe, "the metrics endpoint to be served", alive=(proc,)
    )
    return address


async def test_metrics_health_and_json_logs_of_a_real_worker(harness: Harness) -> None:
    # No --metrics-host: the unauthenticated endpoints listen on loopback only.
    proc = harness.worker(APP, extra=("--metrics-port", "0", "--log-format", "json"))
    host, port = await _metrics_address(harness, proc)
    assert host == "127.0.0.1"
    async with harness.client() as client:
        retried = [(await client.start(observed.retried, i)).run_id for i in range(3)]
        failing = (await client.start(observed.failing, 7)).run_id
        napping = (await client.start(observed.napping, 5)).run_id
        infos = await harness.wait_finished(client, [*retried, failing, napping], alive=(proc,))
    assert {infos[r].state for r in [*retried, napping]} == {"completed"}
    assert infos[failing].state == "failed"

    status, ctype, body = _get(port, "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}

    def samples(name: str) -> list[Any]:
        return families[name].samples

    expected_types = {
        "keel_runs_ended": "counter",
        "keel_run_duration_seconds": "histogram",
        "keel_step_attempt_duration_seconds": "histogram",
        "keel_step_attempt_failures": "counter",
        "keel_claim_latency_seconds": "histogram",
        "keel_replay_duration_seconds": "histogram",
        "keel_worker_slots_used": "gauge",
        "keel_runs": "gauge",
        "keel_oldest_due_run_age_seconds": "gauge",
        "keel_queue_depth": "gauge",
        "keel_workers_live": "gauge",
    }
    for name, kind in expected_types.items():
        assert name in families, f"{name} missing from\n{body.decode()}"
        assert families[name].type == kind, name

    ended = {
        (s.labels["workflow"], s.labels["outcome"]): s.value
        for s in samples("keel_runs_ended")
        if s.name == "keel_runs_ended_total"
    }
    assert ended == {
        ("obs.retried", "completed"): 3,
        ("obs.failing", "failed"): 1,
        ("obs.napping", "completed"): 1,
    }
    failures = {
        (s.labels["workflow"], s.labels["step"]): s.value
        for s in samples("keel_step_attempt_failures")
        if s.name == "keel_step_attempt_failures_total"
    }
    assert failures == {
        ("obs.retried", "obs.flaky"): 3,
        ("obs.napping", "obs.flaky"): 1,
        ("obs.failing", "obs.doomed"): 1,
    }
    attempts = {
        (s.labels["workflow"], s.labels["step"], s.labels["outcome"]): s.value
        for s in samples("keel_step_attempt_duration_seconds")
        if s.name.endswith("_count")
    }
    assert attempts == {
        ("obs.retried", "obs.flaky", "error"): 3,
        ("obs.retried", "obs.flaky", "ok"): 3,
        ("obs.napping", "obs.flaky", "error"): 1,
        ("obs.napping", "obs.flaky", "ok"): 1,
        ("obs.failing", "obs.doomed", "error"): 1,
    }
    replayed = [s for s in samples("keel_replay_duration_seconds") if s.name.endswith("_count")]
    assert [(s.labels["workflow"], s.value) for s in replayed] == [("obs.napping", 1)]
    by_state = {s.labels["state"]: s.value for s in samples("keel_runs")}
    assert by_state["completed"] == 4 and by_state["failed"] == 1 and by_state["running"] == 0
    assert set(by_state) == {state.value for state in keel.RunState}  # every state, 0 or not
    assert [s.value for s in samples("keel_workers_live")] == [1]
    assert [s.value for s in samples("keel_oldest_due_run_age_seconds")] == [0]
    # Read as the scrape happens: every run has left the worker.
    slots = {s.labels["kind"]: s.value for s in samples("keel_worker_slots_used")}
    assert slots == {"run": 0, "task": 0}

    # No series is per run: no run id in any label name or value.
    run_ids = {*retried, failing, napping}
    for family in families.values():
        for sample in family.samples:
            assert "run_id" not in sample.labels, sample
            assert not run_ids & set(sample.labels.values()), sample

    status, ctype, body = _get(port, "/healthz")
    assert (status, ctype) == (200, "application/json")
    assert json.loads(body)["live"] is True
    status, _, body = _get(port, "/readyz")
    ready = json.loads(body)
    assert status == 200 and ready["ready"] is True, ready
    assert {c["name"] for c in ready["checks"]} == {"store", "schema", "workers", "overdue"}
    assert _get(port, "/nothing")[0] == 404

    proc.terminate()
    assert proc.wait(timeout=30) == 0, harness.worker_output()
    records = _json_lines(proc)  # every line is one JSON object (or this raises)
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    attempt_failed = [
        r for r in records if r["level"] == "WARNING" and r.get("step") == "obs.flaky"
    ]
    assert len(attempt_failed) == 4
    assert {r["run_id"] for r in attempt_failed} == {*retried, napping}
    assert {(r["workflow"], r["attempt"]) for r in attempt_failed} == {
        ("obs.retried", 1),
        ("obs.napping", 1),
    }
    run_failed = [r for r in records if r["level"] == "ERROR" and r.get("run_id") == failing]
    assert [r["workflow"] for r in run_failed] == ["obs.failing"]
    assert "never works" in run_failed[0]["message"]
