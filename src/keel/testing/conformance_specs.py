"""Conformance tests for graph specs by digest (mixed into StoreConformance)."""

from __future__ import annotations

import asyncio

import pytest

from keel.errors import StoreError
from keel.store.ports import Store
from keel.testing.conformance_helpers import StoreFactory, run_with_store

_SPEC = b'{"format":1,"graph":"orders","inputs":[],"nodes":[{"kind":"node","name":"a"}]}'


class SpecConformance:
    """Every backend keeps one spec per (graph, version) and refuses another."""

    def test_spec_unknown_is_none(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            assert await store.specs.load("orders", "0123456789abcdef") is None
            assert await store.specs.list() == []

        run_with_store(store_factory, body)

    def test_spec_saved_loads_byte_for_byte_and_saving_again_is_a_noop(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            spec = _SPEC + "é\x00".encode()  # any bytes: the store never decodes them
            await store.specs.save("orders", "v1", spec)
            await store.specs.save("orders", "v1", spec)
            assert await store.specs.load("orders", "v1") == spec
            # Keyed by graph and version: neither alone finds it.
            assert await store.specs.load("orders", "v2") is None
            assert await store.specs.load("billing", "v1") is None

        run_with_store(store_factory, body)

    def test_other_spec_under_a_stored_version_is_refused_and_changes_nothing(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            await store.specs.save("orders", "v1", _SPEC)
            with pytest.raises(StoreError, match="another spec"):
                await store.specs.save("orders", "v1", _SPEC + b" ")
            assert await store.specs.load("orders", "v1") == _SPEC

        run_with_store(store_factory, body)

    def test_specs_list_by_graph_and_version(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            for workflow, version in [("orders", "v2"), ("billing", "v1"), ("orders", "v1")]:
                await store.specs.save(workflow, version, f"{workflow}/{version}".encode())
            assert await store.specs.list() == [
                ("billing", "v1"),
                ("orders", "v1"),
                ("orders", "v2"),
            ]
            assert await store.specs.list("orders") == [("orders", "v1"), ("orders", "v2")]
            assert await store.specs.list("shipping") == []

        run_with_store(store_factory, body)

    def test_concurrent_saves_of_one_spec_all_succeed(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            # Many processes start runs of one graph at once: every save succeeds.
            await asyncio.gather(*(store.specs.save("orders", "v1", _SPEC) for _ in range(12)))
            assert await store.specs.load("orders", "v1") == _SPEC

        run_with_store(store_factory, body)
