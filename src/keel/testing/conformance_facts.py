"""Conformance tests for facts, values stored once by content digest (mixed into
StoreConformance), and for journal rows that reference them."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from keel.core.events import StepCompleted, encode_data
from keel.core.facts import externalize, value_digest
from keel.errors import FactDigestError, FactNotFoundError
from keel.store.base import NewEvent
from keel.store.ports import Store, Turn
from keel.testing.conformance_admin import fork_of
from keel.testing.conformance_helpers import StoreFactory, event, leased, run_with_store

BIG = b'"' + bytes(range(48, 58)) * 20_000 + b'"'  # 200 kB of JSON


def completed(result: bytes, n: int = 1) -> tuple[NewEvent, NewEvent, str]:
    """A ``step_completed`` event with ``result``, its reference row (the result
    kept out) and the result's digest."""
    digest = value_digest(result)
    completion = StepCompleted(
        result=msgspec.Raw(result), args_hash=f"h{n}", attempt=1, worker="w", digest=digest
    )
    data = encode_data(completion)
    ref = externalize(data, threshold=64)
    assert ref is not None
    ref_data, ref_digest, value = ref
    assert value == result and ref_digest == digest
    command = f"step:s#{n}"
    return (
        NewEvent("step_completed", command, data),
        NewEvent("step_completed", command, ref_data),
        digest,
    )


class FactConformance:
    """Every backend stores a value once under its sha256 and resolves references."""

    def test_save_then_load_by_digest(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            digest = value_digest(BIG)
            assert await store.facts.load(digest) is None
            await store.facts.save(digest, BIG)
            assert await store.facts.load(digest) == BIG
            small = b'{"a":1}'
            await store.facts.save(value_digest(small), small)
            unknown = value_digest(b"never saved")
            found = await store.facts.load_many([digest, value_digest(small), unknown, digest])
            assert found == {digest: BIG, value_digest(small): small}
            assert await store.facts.load_many([]) == {}

        run_with_store(store_factory, body)

    def test_saving_again_is_idempotent(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            digest = value_digest(BIG)
            await store.facts.save(digest, BIG)
            await store.facts.save(digest, bytes(BIG))  # the same bytes: nothing changes
            await asyncio.gather(*(store.facts.save(digest, BIG) for _ in range(8)))
            assert await store.facts.load(digest) == BIG

        run_with_store(store_factory, body)

    def test_a_digest_that_does_not_match_is_refused(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            digest = value_digest(b'"a"')
            with pytest.raises(FactDigestError, match="hashes to"):
                await store.facts.save(digest, b'"b"')
            assert await store.facts.load(digest) is None
            for bad in ("", "abc", digest.upper(), digest + "0", None):
                with pytest.raises(FactDigestError, match="not a fact digest"):
                    await store.facts.save(bad, b'"a"')  # type: ignore[arg-type]
                with pytest.raises(FactDigestError):
                    await store.facts.load(bad)  # type: ignore[arg-type]
            with pytest.raises(FactDigestError, match="must be bytes"):
                await store.facts.save(digest, '"a"')  # type: ignore[arg-type]
            with pytest.raises(FactDigestError):
                await store.facts.load_many([digest, "nope"])
            assert await store.facts.load(digest) is None

        run_with_store(store_factory, body)

    def test_history_resolves_a_reference_to_the_event_written(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            full, ref, digest = completed(BIG)
            lease = await leased(store, "r1")
            await store.facts.save(digest, BIG)
            await store.runs.commit(lease, Turn(1, [event(1), ref, event(3)]))
            history = await store.reads.history("r1")
            assert [e.data for e in history[1:]] == [event(1).data, full.data, event(3).data]
            assert [e.data for e in await store.reads.history("r1", after_seq=1)] == [
                full.data,
                event(3).data,
            ]

        run_with_store(store_factory, body)

    def test_a_reference_to_a_missing_fact_is_an_error(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            _, ref, digest = completed(BIG)
            lease = await leased(store, "r1")
            await store.runs.commit(lease, Turn(1, [ref]))
            with pytest.raises(FactNotFoundError, match="event 1 of run 'r1'") as err:
                await store.reads.history("r1")
            assert err.value.digest == digest

        run_with_store(store_factory, body)

    def test_a_fork_shares_the_facts_of_its_original(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            full, ref, digest = completed(BIG)
            lease = await leased(store, "src")
            await store.facts.save(digest, BIG)
            await store.runs.commit(lease, Turn(1, [ref, event(2)]))
            await store.admin.fork(fork_of("src", "f1", 2), [ref], redeliver_signals=False)
            [_, copied] = await store.reads.history("f1")
            assert copied.data == full.data

        run_with_store(store_factory, body)
