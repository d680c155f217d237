"""How PostgreSQL errors surface: a damaged database is a DatabaseCorruptError
(the worker stops, commands exit non-zero), everything else a plain StoreError."""

from __future__ import annotations

import psycopg
import psycopg.errors
import pytest

from keel.errors import DatabaseCorruptError, StoreError
from keel.store.postgres._conn import ErrorMapper, store_error


@pytest.mark.parametrize("cls", [psycopg.errors.DataCorrupted, psycopg.errors.IndexCorrupted])
def test_corruption_sqlstates_are_database_corrupt_errors(cls: type[psycopg.Error]) -> None:
    with (
        pytest.raises(DatabaseCorruptError, match="damaged") as info,
        ErrorMapper("db.example:5432/app"),
    ):
        raise cls("invalid page in block 7 of relation base/16384/16385")
    assert isinstance(info.value.__cause__, cls)
    assert "db.example:5432/app" in str(info.value)


def test_other_errors_stay_plain_store_errors() -> None:
    err = store_error(psycopg.errors.UniqueViolation("duplicate key"), "h:5432/app")
    assert type(err) is StoreError
    assert not isinstance(err, DatabaseCorruptError)
