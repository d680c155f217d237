"""The SQLite store passes the store conformance suite, in both durability modes."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.store import SQLiteStore
from keel.testing.conformance import StoreConformance, StoreFactory


class TestSQLiteStore(StoreConformance):
    @pytest.fixture
    def store_factory(self, tmp_path: Path) -> StoreFactory:
        return lambda: SQLiteStore(tmp_path / "keel.db")


class TestSQLiteStoreSynchronousNormal(StoreConformance):
    @pytest.fixture
    def store_factory(self, tmp_path: Path) -> StoreFactory:
        return lambda: SQLiteStore(tmp_path / "keel.db", synchronous="NORMAL")
