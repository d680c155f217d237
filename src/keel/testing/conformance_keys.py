"""Conformance tests for cross-run idempotency keys (mixed into StoreConformance).

Expiry (``max_age``) is measured on the store clock: the tests wait until
:meth:`Store.now` has passed an entry's age, never for a guessed time, and a
backend that takes an injected clock is also checked at the exact boundary."""

from __future__ import annotations

import asyncio

import pytest

from keel.store.ports import Store
from keel.testing.conformance_helpers import (
    SHORT_TTL,
    ClockedStoreFactory,
    StoreFactory,
    run_with_store,
    wait_until_past,
)


class IdempotencyConformance:
    """Every backend keeps the first committed result per (scope, key)."""

    def test_idempotency_key_unknown_is_none(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            assert await store.keys.get("charge", "order-1") is None

        run_with_store(store_factory, body)

    def test_first_put_wins_and_later_puts_get_it(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            assert await store.keys.put("charge", "order-1", b'"first"') == b'"first"'
            assert await store.keys.put("charge", "order-1", b'"second"') == b'"first"'
            assert await store.keys.get("charge", "order-1") == b'"first"'
            # Keys are scoped by step: another step with the same key is separate.
            assert await store.keys.put("refund", "order-1", b'"r"') == b'"r"'
            assert await store.keys.get("charge", "order-2") is None

        run_with_store(store_factory, body)

    def test_concurrent_puts_converge_on_one_result(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            # Concurrent calls on one store object: separate pooled connections on
            # PostgreSQL, one group commit on SQLite; one winner either way.
            results = await asyncio.gather(
                *(store.keys.put("ship", "k", f'"{i}"'.encode()) for i in range(12))
            )
            assert len(set(results)) == 1
            assert await store.keys.get("ship", "k") == results[0]

        run_with_store(store_factory, body)

    def test_an_entry_older_than_max_age_is_missing(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            await store.keys.put("price", "k", b'"old"')
            stored_by = await store.now()  # the entry's time is at or before this
            assert await store.keys.get("price", "k", max_age=3600.0) == b'"old"'
            await wait_until_past(store, stored_by + SHORT_TTL)
            assert await store.keys.get("price", "k", max_age=SHORT_TTL) is None
            # Without max_age (or with a longer one) the entry is still there.
            assert await store.keys.get("price", "k") == b'"old"'
            assert await store.keys.get("price", "k", max_age=3600.0) == b'"old"'

        run_with_store(store_factory, body)

    def test_put_replaces_an_expired_entry_and_keeps_a_fresh_one(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            await store.keys.put("price", "k", b'"old"')
            stored_by = await store.now()
            # Fresh: the first result still wins, with or without max_age.
            assert await store.keys.put("price", "k", b'"x"', max_age=3600.0) == b'"old"'
            await wait_until_past(store, stored_by + SHORT_TTL)
            # Expired, but a put without max_age keeps first-write-wins.
            assert await store.keys.put("price", "k", b'"y"') == b'"old"'
            assert await store.keys.put("price", "k", b'"new"', max_age=SHORT_TTL) == b'"new"'
            # The replacement is stored anew: fresh again, so it wins in turn.
            assert await store.keys.get("price", "k", max_age=3600.0) == b'"new"'
            assert await store.keys.put("price", "k", b'"z"', max_age=3600.0) == b'"new"'
            # Other keys of the scope are untouched.
            assert await store.keys.get("price", "other") is None

        run_with_store(store_factory, body)

    def test_concurrent_puts_after_expiry_converge_on_one_new_result(
        self, store_factory: StoreFactory, clocked_store_factory: ClockedStoreFactory | None
    ) -> None:
        # The new winner must stay fresh while the others put: on an injected
        # clock time stands still; on a real one (PostgreSQL's) the TTL is far
        # longer than twelve puts take, however loaded the machine.
        now = [1_000_000.0]
        factory: StoreFactory = store_factory
        ttl = 2.0
        if clocked_store_factory is not None:
            clocked = clocked_store_factory
            factory, ttl = (lambda: clocked(lambda: now[0])), 10.0

        async def body(store: Store) -> None:
            await store.keys.put("ship", "k", b'"old"')
            if clocked_store_factory is not None:
                now[0] += ttl + 1.0
            else:
                await wait_until_past(store, await store.now() + ttl)
            results = await asyncio.gather(
                *(store.keys.put("ship", "k", f'"{i}"'.encode(), max_age=ttl) for i in range(12))
            )
            assert len(set(results)) == 1
            assert results[0] != b'"old"'
            assert await store.keys.get("ship", "k") == results[0]

        run_with_store(factory, body)

    def test_max_age_boundary_on_an_injected_clock(
        self, clocked_store_factory: ClockedStoreFactory | None
    ) -> None:
        if clocked_store_factory is None:
            pytest.skip("the backend takes no injected clock")
        now = [1_000_000.0]
        factory = clocked_store_factory

        async def body(store: Store) -> None:
            await store.keys.put("price", "k", b'"old"')
            now[0] += 10.0  # exactly max_age old: still fresh
            assert await store.keys.get("price", "k", max_age=10.0) == b'"old"'
            assert await store.keys.put("price", "k", b'"new"', max_age=10.0) == b'"old"'
            now[0] += 0.5  # older than max_age: missing, and replaced by a put
            assert await store.keys.get("price", "k", max_age=10.0) is None
            assert await store.keys.put("price", "k", b'"new"', max_age=10.0) == b'"new"'
            now[0] += 10.0  # the replacement's age counts from its own put
            assert await store.keys.get("price", "k", max_age=10.0) == b'"new"'

        run_with_store(lambda: factory(lambda: now[0]), body)
