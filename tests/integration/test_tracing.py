"""Spans through the OpenTelemetry API, caught by the SDK's in-memory exporter:
one trace from a client's start to a step run by another worker, children in
their parent's trace, and no step spans for what a worker replays.

Real workers on a real SQLite file, in this process (the tracer provider is
global to a process: it is installed once, and each test reads only the spans
it caused).
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

import keel
from keel.core.cron import tick_run_id
from keel.observe import tracing
from tests.integration._support import wait_state, wait_until

_exporter = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def _provider() -> None:
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):  # installed by an earlier module: add ours
        current.add_span_processor(SimpleSpanProcessor(_exporter))
        return
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_exporter))
    trace.set_tracer_provider(provider)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    _exporter.clear()
    yield _exporter
    _exporter.clear()


@keel.step(name="tr.first")
def first(x: int) -> int:
    # Spans the step's own code makes nest under its keel.step span.
    with trace.get_tracer("tests").start_as_current_span("user.work") as span:
        span.set_attribute(tracing.RUN_ID, keel.current_step().run_id)  # type: ignore[union-attr]
        return x + 1


@keel.step(name="tr.second")
def second(x: int) -> int:
    return x * 10


@keel.step(name="tr.third")
def third(x: int) -> int:
    return x - 1


@keel.workflow(name="tr.two_halves")
async def two_halves(x: int) -> int:
    y = await first(x)
    await keel.wait_for_signal("go")  # the first worker stops here
    z = await second(y)
    return await third(z)


@keel.workflow(name="tr.child")
async def child(x: int) -> int:
    return await second(x)


@keel.workflow(name="tr.parent")
async def parent(x: int) -> int:
    y = await first(x)
    return await (await keel.start_child(child, y)).result()


def _named(found: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in found if s.name == name]


def _attr(span: ReadableSpan, key: str) -> object:
    assert span.attributes is not None
    return span.attributes.get(key)


def _finished(exporter: InMemorySpanExporter, run_id: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if _attr(s, tracing.RUN_ID) == run_id]


async def test_one_trace_from_start_to_a_step_on_another_worker(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    url = f"sqlite:///{tmp_path / 'keel.db'}"
    async with keel.Client(url) as client:
        async with keel.Worker(url, poll_interval=0.02, owner="worker-a"):
            handle = await client.start(two_halves, 1)
            await wait_state(client, handle.run_id, keel.RunState.SUSPENDED)
        # worker-a has stopped; worker-b, another worker (replaying every
        # turn from the store), finishes the run after the signal.
        async with keel.Worker(url, poll_interval=0.02, owner="worker-b", cache=False):
            await client.signal(handle.run_id, "go")
            assert await client.result(handle.run_id, timeout=20) == 19

    found = _finished(spans, handle.run_id)
    (start,) = _named(found, tracing.SPAN_START_WORKFLOW)
    trace_id = start.context.trace_id
    assert {s.context.trace_id for s in found if s.name != tracing.SPAN_SIGNAL_SEND} == {trace_id}

    turns = _named(found, tracing.SPAN_RUN)
    assert {_attr(t, tracing.WORKER) for t in turns} == {"worker-a", "worker-b"}
    for turn in turns:  # every lease turn continues the trace the client started
        assert turn.parent is not None and turn.parent.span_id == start.context.span_id
        assert _attr(turn, tracing.WORKFLOW) == "tr.two_halves"
    turn_of = {t.context.span_id: _attr(t, tracing.WORKER) for t in turns}

    steps = _named(found, tracing.SPAN_STEP)
    where = {
        _attr(s, tracing.STEP): turn_of[s.parent.span_id] for s in steps if s.parent is not None
    }
    assert where == {"tr.first": "worker-a", "tr.second": "worker-b", "tr.third": "worker-b"}
    assert len(steps) == 3  # one span per attempt run; worker-b replayed tr.first: none
    assert {_attr(s, tracing.ATTEMPT) for s in steps} == {1}
    (user,) = _named(found, "user.work")
    (step_first,) = [s for s in steps if _attr(s, tracing.STEP) == "tr.first"]
    assert user.parent is not None and user.parent.span_id == step_first.context.span_id
    (sent,) = _named(found, tracing.SPAN_SIGNAL_SEND)
    assert _attr(sent, tracing.SIGNAL) == "go"


async def test_no_step_spans_for_steps_replayed_after_a_restart(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    url = f"sqlite:///{tmp_path / 'keel.db'}"
    async with keel.Client(url) as client:
        async with keel.Worker(url, poll_interval=0.02, cache=False):
            handle = await client.start(two_halves, 2)
            await wait_state(client, handle.run_id, keel.RunState.SUSPENDED)
        before = {
            _attr(s, tracing.STEP) for s in _named(_finished(spans, handle.run_id), "keel.step")
        }
        assert before == {"tr.first"}
        spans.clear()
        # Restarted: the run's journal is replayed (tr.first completed) on every
        # turn, since nothing is cached; only new work makes spans.
        async with keel.Worker(url, poll_interval=0.02, cache=False):
            await client.signal(handle.run_id, "go")
            assert await client.result(handle.run_id, timeout=20) == 29
    steps = _named(_finished(spans, handle.run_id), tracing.SPAN_STEP)
    assert sorted(str(_attr(s, tracing.STEP)) for s in steps) == ["tr.second", "tr.third"]


async def test_a_child_run_is_in_its_parents_trace(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    url = f"sqlite:///{tmp_path / 'keel.db'}"
    async with keel.Worker(url, poll_interval=0.02) as worker:
        client = worker.client()
        handle = await client.start(parent, 4)
        assert await client.result(handle.run_id, timeout=20) == 50
    mine = _finished(spans, handle.run_id)
    (start,) = _named(mine, tracing.SPAN_START_WORKFLOW)
    (started,) = _named(mine, tracing.SPAN_CHILD_START)
    ids = _attr(started, tracing.CHILD_RUN_IDS)
    assert isinstance(ids, tuple) and len(ids) == 1
    child_id = str(ids[0])
    assert child_id.startswith(handle.run_id)
    theirs = _finished(spans, child_id)
    assert _named(theirs, tracing.SPAN_RUN) and _named(theirs, tracing.SPAN_STEP)
    assert {s.context.trace_id for s in [*mine, *theirs]} == {start.context.trace_id}
    parent_turns = {t.context.span_id for t in _named(mine, tracing.SPAN_RUN)}
    for turn in _named(theirs, tracing.SPAN_RUN):  # under the turn that started it
        assert turn.parent is not None and turn.parent.span_id in parent_turns


@keel.step(name="tr.queued", queue="tr-q")
def queued(x: int) -> int:
    return x + 100


@keel.workflow(name="tr.dispatching")
async def dispatching(x: int) -> int:
    return await queued(await first(x))


async def test_a_dispatched_step_on_a_queue_worker_is_in_the_runs_trace(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    url = f"sqlite:///{tmp_path / 'keel.db'}"
    async with (
        keel.Worker(url, poll_interval=0.02, owner="driver") as driver,
        keel.Worker(url, poll_interval=0.02, owner="queue-worker", queues=["tr-q"]),
    ):
        client = driver.client()
        handle = await client.start(dispatching, 1)
        assert await client.result(handle.run_id, timeout=20) == 102
    found = _finished(spans, handle.run_id)
    (start,) = _named(found, tracing.SPAN_START_WORKFLOW)
    assert {s.context.trace_id for s in found} == {start.context.trace_id}
    (task_step,) = [s for s in _named(found, tracing.SPAN_STEP) if _attr(s, tracing.QUEUE)]
    assert (_attr(task_step, tracing.STEP), _attr(task_step, tracing.QUEUE)) == (
        "tr.queued",
        "tr-q",
    )
    assert task_step.parent is not None and task_step.parent.span_id == start.context.span_id


@keel.workflow(name="tr.scheduled")
async def scheduled(x: int) -> int:
    return await second(x)


async def test_a_scheduled_run_has_a_start_span_that_begins_its_trace(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    url = f"sqlite:///{tmp_path / 'keel.db'}"
    async with keel.Worker(url, poll_interval=0.02, owner="scheduler") as worker:
        client = worker.client()
        at = datetime.now(UTC) - timedelta(seconds=1)  # due at once
        await client.schedule(scheduled, 3, at=at, schedule_id="tr-once")
        run_id = tick_run_id("tr-once", at.timestamp())
        await wait_until(lambda: worker.store.reads.get_run(run_id), "the tick to start its run")
        assert await client.result(run_id, timeout=20) == 30
        stored = await tracing.stored_traceparent(worker.store, run_id)
    found = _finished(spans, run_id)
    (start,) = _named(found, tracing.SPAN_START_WORKFLOW)
    assert start.parent is None  # a root: the tick begins the run's trace
    assert (_attr(start, tracing.SCHEDULE), _attr(start, tracing.WORKFLOW)) == (
        "tr-once",
        "tr.scheduled",
    )
    assert _attr(start, tracing.SCHEDULE_FIRED) is True
    ctx = start.context
    assert stored == f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"
    turns = _named(found, tracing.SPAN_RUN)
    assert turns and _named(found, tracing.SPAN_STEP)
    assert {s.context.trace_id for s in found} == {start.context.trace_id}
    for turn in turns:  # every lease turn continues the trace the tick began
        assert turn.parent is not None and turn.parent.span_id == start.context.span_id


_flaky_calls: list[int] = []


@keel.step(
    name="tr.queued_flaky",
    queue="tr-q2",
    retry=keel.RetryPolicy(max_attempts=3, initial_interval=0.01, max_interval=0.05, jitter=0.0),
)
def queued_flaky(x: int) -> int:
    _flaky_calls.append(x)
    if len(_flaky_calls) == 1:
        raise ConnectionError("first attempt fails")
    return x + 1


@keel.workflow(name="tr.dispatching_flaky")
async def dispatching_flaky(x: int) -> int:
    return await queued_flaky(x)


async def test_every_attempt_of_a_dispatched_step_is_in_the_runs_trace(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    # The queue worker learns the run's trace context once and keeps it: the
    # retry's span has the same parent as the first attempt's.
    _flaky_calls.clear()
    url = f"sqlite:///{tmp_path / 'keel.db'}"
    async with (
        keel.Worker(url, poll_interval=0.02, owner="driver") as driver,
        keel.Worker(url, poll_interval=0.02, owner="queue-worker", queues=["tr-q2"]),
    ):
        client = driver.client()
        handle = await client.start(dispatching_flaky, 1)
        assert await client.result(handle.run_id, timeout=20) == 2
    found = _finished(spans, handle.run_id)
    (start,) = _named(found, tracing.SPAN_START_WORKFLOW)
    attempts = sorted(
        (s for s in _named(found, tracing.SPAN_STEP) if _attr(s, tracing.QUEUE)),
        key=lambda s: int(str(_attr(s, tracing.ATTEMPT))),
    )
    assert [_attr(s, tracing.ATTEMPT) for s in attempts] == [1, 2]
    for span in attempts:
        assert span.context.trace_id == start.context.trace_id
        assert span.parent is not None and span.parent.span_id == start.context.span_id
    assert not attempts[0].status.is_ok and attempts[1].status.is_ok


seen_in_step: list[SpanContext] = []


@keel.step(name="tr.look")
def look(x: int) -> int:
    seen_in_step.append(trace.get_current_span().get_span_context())
    with trace.get_tracer("tests").start_as_current_span("user.unsampled"):
        return x + 1


@keel.workflow(name="tr.look_then_child")
async def look_then_child(x: int) -> int:
    y = await look(x)
    return await (await keel.start_child(child, y)).result()


async def test_a_run_whose_trace_is_not_sampled_makes_no_spans_and_keeps_its_context(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    # The test provider's sampler is the SDK's default, ParentBased(ALWAYS_ON):
    # a run started under an unsampled span is not recorded anywhere, and
    # Keel does not even ask for the spans (see tracing.follows_parent).
    assert tracing.enabled() and tracing.follows_parent(getattr(tracing._tracer, "sampler", None))
    caller = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(TraceFlags.DEFAULT))
    seen_in_step.clear()
    url = f"sqlite:///{tmp_path / 'keel.db'}"
    async with keel.Worker(url, poll_interval=0.02) as worker:
        client = worker.client()
        with trace.use_span(NonRecordingSpan(caller)):
            handle = await client.start(look_then_child, 1)
        assert await handle.result(timeout=20) == 20
        child_ids = [r.run_id for r in (await client.list(parent_run_id=handle.run_id)).runs]

    assert len(child_ids) == 1
    everything = spans.get_finished_spans()
    assert [s.name for s in everything if s.context.trace_id == 0x1234] == []
    assert _finished(spans, handle.run_id) == [] and _finished(spans, child_ids[0]) == []
    # The step's code ran in the caller's trace, unsampled, so its own span
    # was dropped by the same sampler rather than starting a trace of its own.
    (inside,) = seen_in_step
    assert inside.trace_id == 0x1234 and not inside.trace_flags.sampled
    assert _named(list(everything), "user.unsampled") == []


async def test_a_dispatched_step_of_an_unsampled_run_makes_no_span_on_the_queue_worker(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    caller = SpanContext(0x4321, 0x8765, is_remote=True, trace_flags=TraceFlags(0))
    url = f"sqlite:///{tmp_path / 'keel.db'}"
    async with (
        keel.Worker(url, poll_interval=0.02, owner="driver") as driver,
        keel.Worker(url, poll_interval=0.02, owner="queue-worker", queues=["tr-q"]),
    ):
        with trace.use_span(NonRecordingSpan(caller)):
            handle = await driver.client().start(dispatching, 1)
        assert await handle.result(timeout=20) == 102
    assert _finished(spans, handle.run_id) == []
    assert [s.name for s in spans.get_finished_spans() if s.context.trace_id == 0x4321] == []


def test_keel_asks_for_no_span_in_an_unsampled_trace(spans: InMemorySpanExporter) -> None:
    unsampled = "00-0000000000000000000000000000abcd-00000000000000ef-00"
    turn = tracing.begin_turn(unsampled, "r-1", "wf", "w-1")
    try:
        assert not turn.span.is_recording() and turn.traceparent == unsampled
        assert tracing.begin_step("r-1", "wf", "s", 1) is None  # nothing to end
        # A dispatched step's attempt runs in its own context (attached, never detached).
        own = contextvars.copy_context()
        assert own.run(tracing.begin_step, "r-1", "", "s", 1, queue="q", parent=unsampled) is None
        assert own.run(trace.get_current_span).get_span_context().trace_id == 0xABCD
    finally:
        tracing.end_turn(turn)
    sampled = "00-0000000000000000000000000000abcd-00000000000000ef-01"
    turn = tracing.begin_turn(sampled, "r-1", "wf", "w-1")
    try:
        assert turn.span.is_recording()
        step = tracing.begin_step("r-1", "wf", "s", 1)
        assert step is not None and step.is_recording()
        tracing.end_step(step, None)
    finally:
        tracing.end_turn(turn)
    assert [s.name for s in spans.get_finished_spans()] == [tracing.SPAN_STEP, tracing.SPAN_RUN]
