"""How the PostgreSQL group commit cuts its queue into pipelines: never more than
PIPELINE_BYTES of parameters in one, and a larger write always alone."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from keel.errors import ConfigurationError
from keel.store.postgres import PostgresStore
from keel.store.postgres._writes import _MAX_BATCH, PIPELINE_BYTES, _param_bytes, _take_batch


def queued(*sizes: int) -> list[Any]:
    loop = asyncio.new_event_loop()
    try:
        return [("append_events", {"data": b"x" * n, "n": 1}, loop.create_future()) for n in sizes]
    finally:
        loop.close()


def test_parameter_bytes_count_strings_bytes_and_lists() -> None:
    assert _param_bytes({"a": b"12", "b": "345", "c": [b"6", "78"], "d": 9, "e": None}) == 8


def test_small_writes_share_a_batch_up_to_the_statement_cap() -> None:
    queue = queued(*([10] * (_MAX_BATCH + 5)))
    assert len(_take_batch(queue)) == _MAX_BATCH


def test_batches_stop_before_the_byte_cap() -> None:
    half = PIPELINE_BYTES // 2
    queue = queued(half - 10, half - 10, 100)
    assert len(_take_batch(queue)) == 2


@pytest.mark.parametrize("position", [0, 1, 3])
def test_a_large_write_goes_alone(position: int) -> None:
    sizes = [10, 10, 10, 10]
    sizes.insert(position, 4 * 1024 * 1024)
    queue = queued(*sizes)
    batch = _take_batch(queue)
    if position == 0:
        assert len(batch) == 1  # alone: sent as a plain statement, not pipelined
    else:
        assert len(batch) == position  # the small writes before it, without it
        assert len(_take_batch(queue[position:])) == 1


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan"), "5", True, None])
def test_statement_timeout_must_be_a_positive_number(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="statement_timeout"):
        PostgresStore("postgresql://localhost/x", statement_timeout=bad)
