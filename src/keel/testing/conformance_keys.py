"""Conformance tests for cross-run idempotency keys (mixed into StoreConformance)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from keel.store.base import Store

StoreFactory = Callable[[], Store]


def _run(factory: StoreFactory, body: Callable[[Store], Awaitable[None]]) -> None:
    from keel.testing.conformance import run_with_store  # the suite imports this module

    run_with_store(factory, body)


class IdempotencyConformance:
    """Every backend keeps the first committed result per (scope, key)."""

    def test_idempotency_key_unknown_is_none(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            assert await store.get_idempotent("charge", "order-1") is None

        _run(store_factory, body)

    def test_first_put_wins_and_later_puts_get_it(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            assert await store.put_idempotent("charge", "order-1", b'"first"') == b'"first"'
            assert await store.put_idempotent("charge", "order-1", b'"second"') == b'"first"'
            assert await store.get_idempotent("charge", "order-1") == b'"first"'
            # Keys are scoped by step: another step with the same key is separate.
            assert await store.put_idempotent("refund", "order-1", b'"r"') == b'"r"'
            assert await store.get_idempotent("charge", "order-2") is None

        _run(store_factory, body)

    def test_concurrent_puts_converge_on_one_result(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            # Concurrent calls on one store object: separate pooled connections on
            # PostgreSQL, one group commit on SQLite; one winner either way.
            results = await asyncio.gather(
                *(store.put_idempotent("ship", "k", f'"{i}"'.encode()) for i in range(12))
            )
            assert len(set(results)) == 1
            assert await store.get_idempotent("ship", "k") == results[0]

        _run(store_factory, body)
