"""The dashboard app serves the observability endpoints: /metrics (gauges read
from the database), /healthz and /readyz, without a token."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from keel.store.sqlite import SQLiteStore
from keel.ui import create_app


async def test_metrics_and_health_endpoints(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "ui.db")
    await store.open()
    try:
        transport = httpx.ASGITransport(app=create_app(store))
        async with httpx.AsyncClient(transport=transport, base_url="http://ui") as client:
            live = await client.get("/healthz")
            assert live.status_code == 200 and live.json()["live"] is True
            ready = await client.get("/readyz")  # no worker has ever run: not ready
            assert ready.status_code == 503
            checks = {c["name"]: c["ok"] for c in ready.json()["checks"]}
            assert checks["workers"] is False and checks["store"] is True
            scraped = await client.get("/metrics")
    finally:
        await store.close()
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(scraped.text)}
    assert families["keel_runs"].type == "gauge"
    assert {s.labels["state"] for s in families["keel_runs"].samples} >= {"pending", "failed"}
