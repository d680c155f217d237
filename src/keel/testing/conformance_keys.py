"""Conformance tests for cross-run idempotency keys (mixed into StoreConformance)."""

from __future__ import annotations

import asyncio

from keel.store.ports import Store
from keel.testing.conformance_helpers import (
    StoreFactory,
    run_with_store,
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
