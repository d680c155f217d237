"""The exposition of the gauges read from a store, parsed back with
prometheus_client's parser (the store here is a stand-in that returns fixed
reads: the database reads themselves are covered by the conformance suite)."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from keel.core.states import RunState
from keel.observe import metrics
from keel.store.base import QueueInfo, RunStats


class _Reads:
    async def run_stats(self) -> RunStats:
        by_state = dict.fromkeys(RunState, 0) | {RunState.PENDING: 2, RunState.COMPLETED: 5}
        return RunStats(by_state, oldest_due_at=100.0, now=112.5)


class _Tasks:
    async def list_queues(self) -> list[QueueInfo]:
        return [QueueInfo('gp"u\\1', 4, 3, 1)]


class _Workers:
    async def list_versions(self, *, live: bool = True) -> list[Any]:
        class V:
            worker = "w1"

        return [V(), V()]  # one worker, two versions


class _Store:
    reads = _Reads()
    tasks = _Tasks()
    workers = _Workers()


def test_store_gauges_parse_with_their_types_and_labels() -> None:
    text = asyncio.run(metrics.store_gauges(_Store())).decode()  # type: ignore[arg-type]
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert {f.type for f in families.values()} == {"gauge"}
    runs = {s.labels["state"]: s.value for s in families["keel_runs"].samples}
    assert runs == {str(s): 0 for s in RunState} | {"pending": 2, "completed": 5}
    assert families["keel_oldest_due_run_age_seconds"].samples[0].value == 12.5
    (depth,) = families["keel_queue_depth"].samples
    assert depth.labels == {"queue": 'gp"u\\1'} and depth.value == 3
    assert families["keel_queue_leased"].samples[0].value == 1
    assert families["keel_workers_live"].samples[0].value == 1
