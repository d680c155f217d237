"""The replay checker over a real store, on every backend: verdicts, filters, paging, export."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import keel
from keel.replay import check_files, check_runs, export_runs, iter_runs
from keel.store.base import RunPage
from keel.store.ports import Store
from tests.replay.shop import define, define_other, record, recording

MakeStore = Callable[[], Any]


def code(variant: str) -> keel.Registry:
    registry = keel.Registry()
    define(variant, registry)
    return registry


async def test_check_runs_catches_every_code_change(make_store: MakeStore) -> None:
    async with recording(make_store()) as client:
        ids = await record(client, done=2, in_flight=1, other=1)
    shop_runs = set(ids["done"] + ids["in_flight"])
    expected = {
        "reordered": ("step 'rc_reserve' (#0)", "step 'rc_charge' (#0)"),
        "renamed": ("step 'rc_reserve' (#0)", "step 'rc_hold' (#0)"),
        "changed_args": ("arguments hash", "with different arguments"),
    }
    async with keel.Client(make_store()) as client:
        report = await check_runs(client, code("v1"))
        assert {v.run_id for v in report.ok} == shop_runs
        assert [(v.run_id, v.workflow) for v in report.skipped] == [(ids["other"][0], "rc_other")]
        assert report.passed() and not report.passed(strict=True)
        for variant, (recorded, requested) in expected.items():
            report = await check_runs(client, code(variant))
            assert {v.run_id for v in report.diverged} == shop_runs, variant
            for verdict in report.diverged:
                assert verdict.position == 1
                assert verdict.recorded is not None and recorded in verdict.recorded
                assert verdict.requested is not None and requested in verdict.requested
            assert [v.run_id for v in report.skipped] == ids["other"]


async def test_filters_select_runs_newest_first(make_store: MakeStore) -> None:
    async with recording(make_store()) as client:
        first = await record(client, done=1, in_flight=0)
        store: Store = client.store
        between = await store.now()
        rest = await record(client, done=2, in_flight=1, other=2)
    newest_first = [*reversed(rest["other"]), *rest["in_flight"], *reversed(rest["done"])]
    newest_first += first["done"]
    async with keel.Client(make_store()) as client:

        async def ids(**filters: Any) -> list[str]:
            return [run.run_id async for run in iter_runs(client, **filters)]

        assert await ids() == newest_first
        assert await ids(limit=3) == newest_first[:3]
        assert await ids(since=between) == newest_first[:-1]
        assert await ids(since=timedelta(hours=1)) == newest_first
        assert await ids(workflow="rc_other") == list(reversed(rest["other"]))
        assert await ids(state="suspended") == rest["in_flight"]
        # Several workflows or states: one stream each, merged, the limit over all.
        assert await ids(workflow=["rc_shop", "rc_other"], limit=4) == newest_first[:4]
        assert await ids(state=["suspended", "completed"], page_size=1) == newest_first
        report = await check_runs(client, code("v1"), workflow="rc_shop", since=between)
        assert [v.run_id for v in report.results] == newest_first[2:-1]
        with pytest.raises(ValueError, match="unknown run state"):
            await ids(state="sleeping")


class CountingStore:
    """A store that counts ``reads.list_runs`` calls and the pages' sizes."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.limits: list[int] = []
        self.reads = _CountingReads(self)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class _CountingReads:
    def __init__(self, counting: CountingStore) -> None:
        self._counting = counting

    async def list_runs(self, **kwargs: Any) -> RunPage:
        self._counting.limits.append(kwargs["limit"])
        return await self._counting._store.reads.list_runs(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._counting._store.reads, name)


async def test_runs_are_read_a_page_at_a_time_and_no_further_than_needed(
    make_store: MakeStore,
) -> None:
    async with recording(make_store()) as client:
        await record(client, done=5, in_flight=0)
    store = make_store()
    await store.open()
    try:
        counting = CountingStore(store)
        report = await check_runs(counting, code("v1"), limit=4, page_size=2)  # type: ignore[arg-type]
        assert len(report.ok) == 4
        assert counting.limits == [2, 2]  # two pages of 2 hold the 4 runs asked for
        counting.limits.clear()
        await check_runs(counting, code("v1"), limit=1, page_size=2)  # type: ignore[arg-type]
        assert counting.limits == [1]
        counting.limits.clear()
        report = await check_runs(counting, code("v1"), page_size=2)  # type: ignore[arg-type]
        assert len(report.ok) == 5
        assert counting.limits == [2, 2, 2]
    finally:
        await store.close()


async def test_a_run_already_failed_by_nondeterminism_is_skipped(make_store: MakeStore) -> None:
    async with recording(make_store()) as client:
        ids = await record(client, done=0, in_flight=1)
    run_id = ids["in_flight"][0]
    # A deploy of the reordered code resumes the waiting run: the worker fails it.
    registry = code("reordered")
    define_other(registry)
    async with keel.Worker(make_store(), registry=registry, poll_interval=0.05) as worker:
        client = worker.client()
        await client.signal(run_id, "go")
        with pytest.raises(keel.RunFailedError, match="NondeterminismError"):
            await client.result(run_id, timeout=30)
    async with keel.Client(make_store()) as client:
        for variant in ("v1", "reordered"):
            (verdict,) = (await check_runs(client, code(variant))).results
            assert verdict.status == "skipped"
            assert "already failed with a nondeterminism error" in verdict.message


async def test_export_runs_writes_files_the_checker_reads(
    make_store: MakeStore, tmp_path: Path
) -> None:
    async with recording(make_store()) as client:
        ids = await record(client, done=2, in_flight=1, other=1)
    async with keel.Client(make_store()) as client:
        written = await export_runs(client, tmp_path / "all")
        assert sorted(p.stem for p in written) == sorted(r for runs in ids.values() for r in runs)
        from_store = await check_runs(client, code("reordered"))
        from_files = check_files([tmp_path / "all"], code("reordered"))
        assert sorted((v.run_id, v.status, v.position) for v in from_store.results) == sorted(
            (v.run_id, v.status, v.position) for v in from_files.results
        )
        picked = await export_runs(client, tmp_path / "picked", run_ids=ids["done"])
        assert [p.stem for p in picked] == ids["done"]
        with pytest.raises(keel.RunNotFoundError):
            await export_runs(client, tmp_path / "none", run_ids=[ids["done"][0], "no-such-run"])
        assert not (tmp_path / "none").exists()  # nothing written before the check
        with pytest.raises(ValueError, match="not both"):
            await export_runs(client, tmp_path / "x", run_ids=ids["done"], workflow="rc_shop")
