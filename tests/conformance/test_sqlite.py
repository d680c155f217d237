"""The SQLite store passes the store conformance suite, in both durability modes."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.store import SQLiteStore
from keel.testing.conformance import ClockedStoreFactory, StoreConformance, StoreFactory


class TestSQLiteStore(StoreConformance):
    @pytest.fixture
    def store_factory(self, tmp_path: Path) -> StoreFactory:
        return lambda: SQLiteStore(tmp_path / "keel.db")

    @pytest.fixture
    def clocked_store_factory(self, tmp_path: Path) -> ClockedStoreFactory:
        return lambda clock: SQLiteStore(tmp_path / "clocked.db", clock=clock)


class TestSQLiteStoreSynchronousNormal(StoreConformance):
    @pytest.fixture
    def store_factory(self, tmp_path: Path) -> StoreFactory:
        return lambda: SQLiteStore(tmp_path / "keel.db", synchronous="NORMAL")

    @pytest.fixture
    def clocked_store_factory(self, tmp_path: Path) -> ClockedStoreFactory:
        return lambda clock: SQLiteStore(tmp_path / "clocked.db", synchronous="NORMAL", clock=clock)
