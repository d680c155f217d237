"""Property-based fuzzing of the client's run ids, names and payloads, on SQLite and
PostgreSQL, with a real ``keel worker`` process running beside it.

Every call either succeeds, and what it stored comes back exactly, or raises a
typed error (a :class:`keel.KeelError`, or ``TypeError`` for a wrong Python
type) and writes nothing. The oracle (:func:`expected`) says which, and which
error, before the call is made.
"""

from __future__ import annotations

import asyncio
import collections
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import keel
from keel.errors import ConfigurationError, KeelError, SerializationError
from tests import pg
from tests.acceptance.harness import Harness
from tests.integration import fuzz_app

EXAMPLES = 300  # per backend: a few seconds each, well under a minute

# --- the oracle ---------------------------------------------------------------------------


class Refused(Exception):
    """The value cannot be stored exactly: the call must raise ``error``."""

    def __init__(self, error: type[BaseException]) -> None:
        self.error = error


def storable_text(text: str) -> bool:
    return "\x00" not in text and not any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def check_id(value: object, *, max_len: int = 200, hash_ok: bool = True) -> None:
    """Refused like the client refuses a run id or name it is given."""
    if not isinstance(value, str):
        raise Refused(TypeError)
    if not storable_text(value) or not 1 <= len(value) <= max_len:
        raise Refused(ConfigurationError)
    if not hash_ok and "#" in value:
        raise Refused(ConfigurationError)


def check_lookup(value: object) -> None:
    """Refused like the client refuses an id it looks up (any length may be asked for)."""
    if not isinstance(value, str):
        raise Refused(TypeError)
    if not storable_text(value):
        raise Refused(ConfigurationError)


def check_workflows(value: object) -> None:
    """Refused like ``list`` refuses its workflow filter: one name or a list of names."""
    if isinstance(value, list):
        for item in value:
            check_lookup(item)
    else:
        check_lookup(value)


def expected(value: Any) -> Any:
    """``value`` as it must come back when decoded as ``Any``, or :class:`Refused`."""
    if isinstance(value, float) and not math.isfinite(value):
        raise Refused(SerializationError)
    if isinstance(value, str) and not storable_text(value.replace("\x00", "")):
        raise Refused(SerializationError)  # NUL is fine in a payload; a surrogate is not
    if isinstance(value, list):
        return [expected(item) for item in value]
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            text = expected(key) if isinstance(key, str) else str(key)
            if text in out:
                raise Refused(SerializationError)  # e.g. 1 and "1"
            out[text] = expected(item)
        return out
    return value


# --- strategies ---------------------------------------------------------------------------

any_char = st.characters(exclude_categories=())  # surrogates and NUL included
valid_char = st.characters(codec="utf-8", exclude_characters="\x00")
texts = (
    st.text(valid_char, min_size=1, max_size=30)
    | st.text(any_char, max_size=12)
    | st.text(st.characters(codec="utf-8"), min_size=190, max_size=260)
    | st.sampled_from(["", "\x00", "a\x00", "\udc80", "x" * 200, "x" * 201, "é 🚀 #1", "p"])
)
not_str = st.integers() | st.binary(max_size=4) | st.lists(st.integers(), max_size=2)
ids = texts | not_str
payloads = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()  # beyond 64 bits too
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.floats()  # NaN and ±Infinity too
    | st.text(valid_char | st.just("\x00"), max_size=8)  # NUL is fine in a payload
    | st.text(any_char, max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text("01ab", max_size=2) | st.integers(-3, 12), inner, max_size=4)
    ),
    max_leaves=12,
)

ops = st.one_of(
    st.tuples(st.just("start"), st.none() | ids, payloads),
    st.tuples(st.just("start_name"), ids, st.none()),
    st.tuples(st.just("signal"), st.just("p") | ids, payloads),
    st.tuples(st.sampled_from(["get", "history", "result", "cancel"]), ids, st.none()),
    st.tuples(st.just("list"), st.none() | ids, st.none() | ids),
)


# --- the test -----------------------------------------------------------------------------


class Fuzz:
    """The client under test and what it has stored so far."""

    def __init__(self, client: keel.Client, collector: str) -> None:
        self.client = client
        self.collector = collector
        self.runs: dict[str, Any] = {}  # run id -> the result its echo run must give
        self.signals: list[Any] = []  # payloads of signal "p", in the order sent
        self.outcomes: collections.Counter[str] = collections.Counter()  # of op: ok / refused

    async def apply(self, op: str, a: Any, b: Any) -> None:
        self.op = op
        client = self.client
        if op == "start":
            await self.refused_or(
                lambda: (a is None or check_id(a), expected(b)),
                lambda: client.start(fuzz_app.echo, b, run_id=a),
                then=lambda handle: self.started(handle, b),
                nothing_written=lambda: self.not_created(a),
            )
        elif op == "start_name":
            if a in ("fuzz.echo", "fuzz.collector", "fuzz.ordinary"):
                return
            error = TypeError if not isinstance(a, str) else keel.WorkflowNotFoundError
            with pytest.raises(error):
                await client.start(a)
        elif op == "signal":
            if a == fuzz_app.STOP or b == fuzz_app.STOP:
                return
            await self.refused_or(
                lambda: (check_id(a, hash_ok=False), expected(b)),
                lambda: client.signal(self.collector, a, b),
                then=lambda _: self.signals.append(expected(b)) if a == "p" else None,
            )
        elif op == "list":
            await self.refused_or(
                lambda: (a is None or check_workflows(a), b is None or check_lookup(b)),
                lambda: client.list(workflow=a, cursor=b),
                invalid_ok=ConfigurationError,  # a cursor of ours or not: either may be
            )
        else:
            if op == "cancel" and isinstance(a, str) and (a in self.runs or a == self.collector):
                return  # do not cancel the runs whose results are checked
            call = {
                "get": lambda: client.get(a),
                "history": lambda: client.history(a),
                "result": lambda: client.result(a, timeout=0.01),
                "cancel": lambda: client.cancel(a),
            }[op]
            await self.refused_or(lambda: check_lookup(a), call, invalid_ok=KeelError)

    async def refused_or(
        self,
        oracle: Any,
        call: Any,
        *,
        then: Any = None,
        nothing_written: Any = None,
        invalid_ok: type[BaseException] | None = None,
    ) -> None:
        """Run ``call``; it must raise exactly the oracle's error, or succeed."""
        try:
            oracle()
        except Refused as refused:
            with pytest.raises(refused.error) as info:
                await call()
            if refused.error is TypeError:
                assert not isinstance(info.value, KeelError)
            if nothing_written is not None:
                await nothing_written()
            self.outcomes[f"{self.op} refused"] += 1
            return
        try:
            result = await call()
        except KeelError as exc:  # allowed for lookups: not found, timed out, finished
            if invalid_ok is None or not isinstance(exc, invalid_ok):
                raise
            return
        self.outcomes[f"{self.op} ok"] += 1
        if then is not None:
            then(result)

    def started(self, handle: keel.RunHandle[Any], value: Any) -> None:
        if handle.created:
            self.runs[handle.run_id] = expected(value)

    async def not_created(self, run_id: Any) -> None:
        if isinstance(run_id, str) and storable_text(run_id) and run_id not in self.runs:
            with pytest.raises(keel.RunNotFoundError):
                await self.client.get(run_id)


async def all_run_ids(client: keel.Client) -> set[str]:
    seen: set[str] = set()
    cursor = None
    while True:
        page = await client.list(limit=500, cursor=cursor)
        seen.update(r.run_id for r in page.runs)
        if page.next_cursor is None:
            return seen
        cursor = page.next_cursor


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        pg.require_postgres()
        return pg.fresh_database_url()
    return f"sqlite:///{tmp_path / 'keel.db'}"


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    # Hypothesis runs a sync test body per example; each runs its calls on this loop.
    event_loop = asyncio.new_event_loop()
    yield event_loop
    event_loop.close()


@pytest.mark.timeout(180)
def test_fuzzed_client_calls_store_exactly_or_refuse_typed(
    db_url: str, tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    harness = Harness(tmp_path, db_url)
    client = keel.Client(db_url)
    try:
        loop.run_until_complete(client.open())
        worker = harness.worker("tests.integration.fuzz_app", lease_ttl=5.0)
        collector = loop.run_until_complete(client.start(fuzz_app.collector)).run_id
        fuzz = Fuzz(client, collector)

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,  # no .hypothesis directory in the repository
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(ops)
        def one_call(op: tuple[str, Any, Any]) -> None:
            loop.run_until_complete(fuzz.apply(*op))

        one_call()
        # The examples exercised both sides of the oracle, for starts and signals alike.
        for op in ("start", "signal"):
            assert fuzz.outcomes[f"{op} ok"] and fuzz.outcomes[f"{op} refused"], fuzz.outcomes

        async def check_everything() -> None:
            # The worker beside kept going: an ordinary run started now completes.
            assert await client.result((await client.start(fuzz_app.ordinary, 41)).run_id, 60) == 42
            for run_id, value in fuzz.runs.items():
                assert await client.result(run_id, timeout=60) == value, run_id
            await client.signal(collector, "p", fuzz_app.STOP)
            assert await client.result(collector, timeout=60) == fuzz.signals
            # Nothing else was written: no run from a refused start.
            created = await all_run_ids(client)
            assert created - set(fuzz.runs) - {collector} == {
                r.run_id for r in (await client.list(workflow="fuzz.ordinary")).runs
            }

        loop.run_until_complete(check_everything())
        assert worker.alive(), harness.worker_output()
    finally:
        loop.run_until_complete(client.close())
        harness.cleanup()
