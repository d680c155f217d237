"""Conformance tests for journal snapshots (mixed into StoreConformance)."""

from __future__ import annotations

import pytest

from keel.core.states import RunState
from keel.errors import LeaseLostError, StoreError
from keel.store.base import NewSnapshot
from keel.store.ports import Finish, Store, Turn
from keel.testing.conformance_helpers import (
    StoreFactory,
    event,
    expired_lease,
    get,
    leased,
    run_with_store,
)


def _snap(upto: int, data: bytes = b"\x00snap", version: str = "v1") -> NewSnapshot:
    return NewSnapshot(upto_seq=upto, version=version, format=1, data=data)


class SnapshotConformance:
    """Every backend keeps the latest fenced snapshot per run and never trims the journal."""

    def test_no_snapshot_is_none(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await leased(store, "r1")
            assert await store.runs.load_snapshot("r1") is None
            assert await store.runs.load_snapshot("nope") is None

        run_with_store(store_factory, body)

    def test_latest_snapshot_replaces_the_one_before_and_keeps_events(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "r1")
            await store.runs.commit(lease, Turn(1, [event(i) for i in range(1, 5)]))
            before = await get(store, "r1")
            t0 = await store.now()
            await store.runs.save_snapshot(lease, _snap(2, b"\x00first"))
            first = await store.runs.load_snapshot("r1")
            assert first is not None
            assert (first.run_id, first.upto_seq, first.version, first.format, first.data) == (
                "r1",
                2,
                "v1",
                1,
                b"\x00first",
            )
            assert t0 - 1 <= first.created_at <= await store.now() + 1
            big = bytes(range(256)) * 4000  # ~1 MB, every byte value
            await store.runs.save_snapshot(lease, _snap(4, big, version="v2"))
            latest = await store.runs.load_snapshot("r1")
            assert latest is not None and (latest.upto_seq, latest.version) == (4, "v2")
            assert latest.data == big
            assert len(await store.reads.history("r1")) == 5  # nothing deleted
            assert await get(store, "r1") == before  # the run row is untouched
            # Snapshots are per run.
            other = await leased(store, "r2")
            await store.runs.save_snapshot(other, _snap(0))
            r1 = await store.runs.load_snapshot("r1")
            assert r1 is not None and r1.upto_seq == 4

        run_with_store(store_factory, body)

    def test_snapshot_must_cover_existing_events(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "r1")
            await store.runs.commit(lease, Turn(1, [event(1)]))
            for upto in (2, 5, -1):
                with pytest.raises(StoreError) as info:
                    await store.runs.save_snapshot(lease, _snap(upto))
                assert not isinstance(info.value, LeaseLostError)
            assert await store.runs.load_snapshot("r1") is None
            await store.runs.save_snapshot(lease, _snap(1))

        run_with_store(store_factory, body)

    def test_stale_snapshot_write_is_rejected_and_changes_nothing(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            old = await expired_lease(store, "r1")
            with pytest.raises(LeaseLostError):  # expired, not yet reclaimed
                await store.runs.save_snapshot(old, _snap(0, b"\x00stale"))
            [claimed] = await store.runs.claim("w2", limit=1, ttl=30)
            await store.runs.commit(claimed.lease, Turn(1, [event(1), event(2)]))
            await store.runs.save_snapshot(claimed.lease, _snap(1, b"\x00new"))
            before = await get(store, "r1")
            with pytest.raises(LeaseLostError) as info:
                await store.runs.save_snapshot(old, _snap(2, b"\x00stale"))
            assert info.value.run_id == "r1" and info.value.token == old.token
            snap = await store.runs.load_snapshot("r1")
            assert snap is not None and (snap.upto_seq, snap.data) == (1, b"\x00new")
            assert await get(store, "r1") == before

        run_with_store(store_factory, body)

    def test_no_snapshot_writes_after_the_run_ends(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "r1")
            await store.runs.save_snapshot(lease, _snap(0))
            await store.runs.commit(
                lease, Turn(1, [event(1)], end=Finish(RunState.COMPLETED, result=b"1"))
            )
            with pytest.raises(LeaseLostError):
                await store.runs.save_snapshot(lease, _snap(1))
            snap = await store.runs.load_snapshot("r1")
            assert snap is not None and snap.upto_seq == 0

        run_with_store(store_factory, body)
