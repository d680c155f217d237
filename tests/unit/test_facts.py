"""Fact references in journal rows (keel.core.facts) and the writer that makes them."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from keel.core import facts
from keel.core.events import EventType, StepCompleted, decode, encode_data
from keel.errors import ConfigurationError
from keel.store.base import NewEvent
from keel.store.facts import FactWriter
from keel.store.memory import MemoryStore

BIG = b'"' + b"v" * 100_000 + b'"'


def completion(result: bytes) -> bytes:
    return encode_data(
        StepCompleted(
            result=msgspec.Raw(result),
            args_hash="h",
            attempt=2,
            worker="w1",
            digest=facts.value_digest(result),
        )
    )


def test_a_reference_splices_back_to_the_bytes_written() -> None:
    data = completion(BIG)
    ref = facts.externalize(data, facts.FACT_THRESHOLD)
    assert ref is not None
    row, digest, value = ref
    assert value == BIG and digest == facts.value_digest(BIG) and len(row) < 200
    assert facts.is_reference("step_completed", row)
    assert not facts.is_reference("step_completed", data)
    assert not facts.is_reference("side_effect", row)
    assert facts.reference_digest(row) == digest
    assert facts.splice(row, value) == data


def test_small_results_stay_inline() -> None:
    small = completion(b'"' + b"v" * 100 + b'"')
    assert facts.externalize(small, facts.FACT_THRESHOLD) is None
    # An event that is large for other reasons than its result stays too.
    assert len(small) > 150 and facts.externalize(small, threshold=150) is None


def test_a_release_without_facts_refuses_a_reference() -> None:
    row, _, _ = facts.externalize(completion(BIG), 1024) or (b"", "", b"")
    with pytest.raises(msgspec.ValidationError, match="format 2"):
        decode(EventType.STEP_COMPLETED, row)


def test_the_writer_saves_each_large_value_once() -> None:
    store = MemoryStore()
    saved: list[str] = []
    inner = store.facts

    class Counting:
        async def save(self, digest: str, data: bytes) -> None:
            saved.append(digest)
            await inner.save(digest, data)

        def __getattr__(self, name: str) -> object:
            return getattr(inner, name)

    async def go() -> None:
        await store.open()
        writer = FactWriter(Counting())  # type: ignore[arg-type]
        small = NewEvent("step_completed", "step:s#0", completion(b"1"))
        events = [small, NewEvent("step_completed", "step:s#1", completion(BIG))]
        rows = await writer.rows(events)
        assert rows[0] is small and facts.is_reference("step_completed", rows[1].data)
        again = await writer.rows([NewEvent("step_completed", "step:s#2", completion(BIG))])
        assert facts.is_reference("step_completed", again[0].data)
        assert await inner.load(facts.value_digest(BIG)) == BIG
        only_small = [small]
        assert await writer.rows(only_small) is only_small  # nothing copied
        assert await FactWriter(inner, None).rows(events) == events

    asyncio.run(go())
    assert saved == [facts.value_digest(BIG)]  # the repeat was remembered


@pytest.mark.parametrize("bad", [0, 1023, -1, 1.5, True, "64k"])
def test_a_threshold_is_bytes_of_at_least_1_kib(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="fact_threshold"):
        FactWriter(MemoryStore().facts, bad)  # type: ignore[arg-type]
