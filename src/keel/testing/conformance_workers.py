"""Conformance tests for version-filtered claims and the registry of worker
versions (mixed into StoreConformance)."""

from __future__ import annotations

from typing import Any

import pytest

from keel.errors import ConfigurationError
from keel.store.base import NewEvent, NewRun
from keel.store.ports import Store
from keel.testing.conformance_helpers import (
    SHORT_TTL,
    StoreFactory,
    get,
    leased,
    run_with_store,
    wait_until_past,
)


def _run(run_id: str, workflow: str, version: str) -> NewRun:
    return NewRun(run_id, workflow, version, b"{}", NewEvent("run_started", None, b"{}"))


async def _claim(store: Store, versions: Any, owner: str = "w2") -> list[str]:
    claimed = await store.runs.claim(owner, limit=100, ttl=30.0, versions=versions)
    return sorted(c.lease.run_id for c in claimed)


async def _register(store: Store, worker: str, pairs: Any, live_for: float = 30.0) -> None:
    await store.workers.register_versions(worker, pairs, host="h", pid=7, live_for=live_for)


class VersionConformance:
    """A claim with ``versions`` takes only runs of those (workflow, version) pairs,
    from both the due runs and the runs whose lease expired; workers' pairs are
    upserted, listed, expire from the live list and are forgotten."""

    def test_claim_takes_only_runs_of_the_given_pairs(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            for run_id, wf, version in [
                ("a1", "a", "v1"),
                ("a2", "a", "v2"),
                ("b1", "b", "v1"),
                ("c1", "c", "v1"),
            ]:
                await store.runs.create(_run(run_id, wf, version))
            assert await _claim(store, [("a", "v2"), ("b", "v1")]) == ["a2", "b1"]
            # Same version string, other workflow: not a match.
            assert await _claim(store, {("a", "v9"), ("c", "v2")}) == []
            assert await _claim(store, []) == []  # a worker with no workflows takes nothing
            left = await get(store, "a1")
            assert left.lease_owner is None and left.lease_token == 0  # untouched
            assert await _claim(store, None) == ["a1", "c1"]  # None: any version

        run_with_store(store_factory, body)

    def test_claim_filters_runs_whose_lease_expired(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            _, lease, _ = await store.runs.create(
                _run("r1", "a", "v1"), lease_owner="w1", lease_ttl=SHORT_TTL
            )
            assert lease is not None
            await wait_until_past(store, lease.expires_at)
            assert await _claim(store, [("a", "v2")]) == []
            assert (await get(store, "r1")).lease_token == lease.token
            assert await _claim(store, [("a", "v1")]) == ["r1"]
            assert (await get(store, "r1")).lease_token > lease.token

        run_with_store(store_factory, body)

    def test_claim_filter_does_not_stop_at_runs_of_other_versions(
        self, store_factory: StoreFactory
    ) -> None:
        """Runs of other versions due earlier do not use up the claim's limit."""

        async def body(store: Store) -> None:
            for i in range(5):
                await store.runs.create(_run(f"old{i}", "a", "v1"))
            await store.runs.create(_run("new", "a", "v2"))
            claimed = await store.runs.claim("w2", limit=2, ttl=30.0, versions=[("a", "v2")])
            assert [c.lease.run_id for c in claimed] == ["new"]

        run_with_store(store_factory, body)

    @pytest.mark.parametrize("versions", ["a", [("a",)], [("a", 1)], [["a", "v1"]], 5], ids=repr)
    def test_bad_claim_versions_are_a_type_error(
        self, store_factory: StoreFactory, versions: Any
    ) -> None:
        async def body(store: Store) -> None:
            await store.runs.create(_run("r1", "a", "v1"))
            with pytest.raises(TypeError, match="versions"):
                await store.runs.claim("w2", limit=1, ttl=30.0, versions=versions)
            assert (await get(store, "r1")).lease_owner is None

        run_with_store(store_factory, body)

    def test_registered_versions_are_listed_and_refreshed(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            assert await store.workers.list_versions() == []
            before = await store.now()
            await _register(store, "w1", [("a", "v1"), ("b", "v1")])
            await _register(store, "w2", [("a", "v2")])
            rows = await store.workers.list_versions()
            assert [(v.workflow, v.version, v.worker) for v in rows] == [
                ("a", "v1", "w1"),
                ("a", "v2", "w2"),
                ("b", "v1", "w1"),
            ]
            first = rows[0]
            assert first.host == "h" and first.pid == 7
            assert before <= first.first_seen == first.last_seen
            assert first.live_until == pytest.approx(first.last_seen + 30.0)
            await wait_until_past(store, first.last_seen)
            await _register(store, "w1", [("a", "v1")])  # a refresh keeps first_seen
            again = (await store.workers.list_versions())[0]
            assert again.first_seen == first.first_seen and again.last_seen > first.last_seen

        run_with_store(store_factory, body)

    def test_versions_of_a_silent_worker_are_not_live(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await _register(store, "dead", [("a", "v1")], live_for=SHORT_TTL)
            await _register(store, "alive", [("a", "v2")])
            [dead] = [
                v for v in await store.workers.list_versions(live=False) if v.worker == "dead"
            ]
            await wait_until_past(store, dead.live_until)
            assert [v.worker for v in await store.workers.list_versions()] == ["alive"]
            assert [v.worker for v in await store.workers.list_versions(live=False)] == [
                "dead",
                "alive",
            ]

        run_with_store(store_factory, body)

    def test_forgotten_worker_has_no_versions(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await _register(store, "w1", [("a", "v1")])
            await _register(store, "w2", [("a", "v1")])
            await store.workers.forget_versions("w1")
            await store.workers.forget_versions("nobody")
            assert [v.worker for v in await store.workers.list_versions(live=False)] == ["w2"]

        run_with_store(store_factory, body)

    @pytest.mark.parametrize(
        ("kwargs", "error"),
        [
            ({"worker": ""}, ConfigurationError),
            ({"worker": 3}, TypeError),
            ({"host": None}, TypeError),
            ({"pid": "7"}, TypeError),
            ({"live_for": 0}, ConfigurationError),
            ({"versions": [("a", None)]}, TypeError),
        ],
        ids=repr,
    )
    def test_bad_registration_is_refused_and_writes_nothing(
        self, store_factory: StoreFactory, kwargs: dict[str, Any], error: type[Exception]
    ) -> None:
        async def body(store: Store) -> None:
            args: dict[str, Any] = {
                "worker": "w1",
                "versions": [("a", "v1")],
                "host": "h",
                "pid": 1,
                "live_for": 30.0,
            } | kwargs
            worker, versions = args.pop("worker"), args.pop("versions")
            with pytest.raises(error):
                await store.workers.register_versions(worker, versions, **args)
            assert await store.workers.list_versions(live=False) == []

        run_with_store(store_factory, body)

    def test_liveness_locks_where_the_backend_has_them(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            lease = await leased(store, "r1", "w1")
            lock = await store.workers.hold_liveness("w1")
            try:
                assert lock is None or lock.held  # None: this backend has no such locks
                # Its owner is alive: nothing is expired early.
                assert await store.workers.expire_dead_owners() == 0
            finally:
                if lock is not None:
                    await lock.release()
                    await lock.release()  # idempotent
            # Released on stopping: the owner is not judged dead either.
            assert await store.workers.expire_dead_owners() == 0
            assert (await get(store, "r1")).lease_expires_at == lease.expires_at

        run_with_store(store_factory, body)

    def test_closing_the_store_releases_its_liveness_locks(
        self, store_factory: StoreFactory
    ) -> None:
        """A lock left held when its store closes is released with it (its session
        or file is not leaked), so the owner can take it again at once."""

        async def body(store: Store) -> None:
            lock = await store.workers.hold_liveness("w1")
            if lock is None:
                return  # this backend has no such locks
            await store.close()
            assert not lock.held
            await lock.release()  # still idempotent
            await store.open()
            again = await store.workers.hold_liveness("w1")
            assert again is not None and again.held
            await again.release()

        run_with_store(store_factory, body)
