"""OpenTelemetry spans of Keel's work, through ``opentelemetry-api`` only.

Keel creates spans; an application that wants them installs an SDK (a
``TracerProvider`` with an exporter). Without one every call here is a no-op,
and the worker skips what only tracing needs (reading a run's trace context).

Spans (all under the tracer named ``keel``):

========================  =========  =====================================================
name                      kind       when
========================  =========  =====================================================
``keel.start_workflow``   producer   a client starts a run (also the idempotent repeat),
                                     or a worker starts a schedule's run for a tick
``keel.run``              consumer   one lease turn: a worker's pass over a run, from its
                                     claim (replay included) until it suspends, ends,
                                     or leaves the worker
``keel.step``             internal   one step attempt run in the worker (``consumer``:
                                     a dispatched step's attempt on a queue's worker)
``keel.signal.send``      producer   a client sends a signal
``keel.child.start``      internal   a run starts child runs (the write that creates them)
========================  =========  =====================================================

Attributes: ``keel.run_id``, ``keel.workflow``, ``keel.step``, ``keel.attempt``,
``keel.queue``, ``keel.worker``, ``keel.signal``, ``keel.child.run_ids``,
``keel.schedule`` (a scheduled start; ``keel.schedule.fired`` false when
another worker fired the tick first and this span started nothing).

The trace context travels with the run: the ``run_started`` event keeps the
W3C ``traceparent`` of the span that started it (the client's or the
schedule-firing worker's ``keel.start_workflow``, or the parent's ``keel.run`` for a child, the
predecessor's for a continue-as-new successor). Every later ``keel.run`` turn,
on any worker and however much later, is its child, so the whole run is one
trace. Replaying past events emits no span: only work done now does.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
)
from opentelemetry.util.types import AttributeValue

from keel.core.events import UNSET, EventType, decode
from keel.store.ports import Store

__all__ = [
    "ATTEMPT",
    "CHILD_RUN_IDS",
    "QUEUE",
    "RUN_ID",
    "SCHEDULE",
    "SCHEDULE_FIRED",
    "SIGNAL",
    "SPAN_CHILD_START",
    "SPAN_RUN",
    "SPAN_SIGNAL_SEND",
    "SPAN_START_WORKFLOW",
    "SPAN_STEP",
    "STEP",
    "WORKER",
    "WORKFLOW",
    "Turn",
    "adopted_traceparent",
    "begin_step",
    "begin_turn",
    "child_start",
    "enabled",
    "end_step",
    "end_turn",
    "schedule_start",
    "signal_send",
    "start_workflow",
    "stored_traceparent",
]

SPAN_START_WORKFLOW = "keel.start_workflow"
SPAN_RUN = "keel.run"
SPAN_STEP = "keel.step"
SPAN_SIGNAL_SEND = "keel.signal.send"
SPAN_CHILD_START = "keel.child.start"

RUN_ID = "keel.run_id"
WORKFLOW = "keel.workflow"
STEP = "keel.step"
ATTEMPT = "keel.attempt"
QUEUE = "keel.queue"
WORKER = "keel.worker"
SIGNAL = "keel.signal"
CHILD_RUN_IDS = "keel.child.run_ids"
SCHEDULE = "keel.schedule"
SCHEDULE_FIRED = "keel.schedule.fired"

# A proxy until the application installs a provider; :func:`enabled` then swaps
# in the provider's own tracer, so no span pays the proxy's extra hop.
_tracer: Tracer = trace.get_tracer("keel")
_on = False
# Whether the installed sampler drops every span whose parent was not sampled
# (see follows_parent): then a turn or step of an unsampled run creates no span.
_follows_parent = False
_ROOT = Context()  # a context with no span: a turn of a run without stored context


def enabled() -> bool:
    """Whether an SDK's tracer provider is installed (else spans are no-ops).

    Once true it stays true (OpenTelemetry lets a process set its provider
    once), so after the first yes this is one global read."""
    global _on, _tracer, _follows_parent
    if _on:
        return True
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return False
    _tracer = provider.get_tracer("keel")
    _follows_parent = follows_parent(getattr(_tracer, "sampler", None))
    _on = True
    return True


def follows_parent(sampler: object) -> bool:
    """Whether ``sampler`` (the SDK tracer's) never records a span whose parent
    was not sampled: the SDK's ``ParentBased`` samplers with their defaults for
    an unsampled parent (the SDK's default sampler, and every
    ``parentbased_*`` of ``OTEL_TRACES_SAMPLER``), or ``ALWAYS_OFF``.

    Then Keel skips the spans of a run whose trace is not sampled, instead of
    asking the SDK for spans it would drop (a dropped span still costs about a
    quarter of a recorded one); the run's context stays current, so spans made
    in its steps and its child runs follow it, unsampled, as they would have.
    For any other sampler (or another SDK) every span is asked for."""
    try:
        from opentelemetry.sdk.trace import sampling
    except ImportError:  # another SDK: ask it every time
        return False
    if sampler is sampling.ALWAYS_OFF:
        return True
    if not isinstance(sampler, sampling.ParentBased):
        return False
    return (
        getattr(sampler, "_remote_parent_not_sampled", None) is sampling.ALWAYS_OFF
        and getattr(sampler, "_local_parent_not_sampled", None) is sampling.ALWAYS_OFF
    )


def _unsampled(context: Context | None) -> Span | None:
    """The span of ``context`` if it is a valid, unsampled one whose children the
    sampler is known to drop (:func:`follows_parent`); else ``None``."""
    if not _follows_parent:
        return None
    span = trace.get_current_span(context)
    span_context = span.get_span_context()
    if span_context.is_valid and not span_context.trace_flags.sampled:
        return span
    return None


def traceparent(span: Span) -> str | None:
    """The W3C ``traceparent`` of ``span``; ``None`` for a span that is not real."""
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


@functools.lru_cache(maxsize=1024)
def context_of(parent: str | None) -> Context | None:
    """The context a stored ``traceparent`` names (``None``: none stored, or not
    a valid one). Parsed by hand (the propagator's regular expression costs
    several times more) and cached: a run's later turns and its dispatched
    steps ask again for the same one."""
    if not parent:
        return None
    fields = parent.split("-")
    if len(fields) < 4 or len(fields[0]) != 2 or fields[0] == "ff":
        return None
    version, trace_hex, span_hex, flags_hex = fields[:4]
    if len(trace_hex) != 32 or len(span_hex) != 16 or len(flags_hex) != 2:
        return None
    if version == "00" and len(fields) != 4:
        return None
    try:
        int(version, 16)
        trace_id, span_id, flags = int(trace_hex, 16), int(span_hex, 16), int(flags_hex, 16)
    except ValueError:
        return None
    span_context = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))
    if not span_context.is_valid:
        return None
    return trace.set_span_in_context(NonRecordingSpan(span_context), _ROOT)


def _failed(span: Span, error: BaseException) -> None:
    """Mark ``span`` as ended by ``error`` (as the API's ``use_span`` does)."""
    if span.is_recording():
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))


# The run a client is starting in this task and its traceparent: a worker of the
# same process that adopts the run (its driver task copies this context) needs
# no read to learn it.
_starting: ContextVar[tuple[str, str | None] | None] = ContextVar("keel_starting", default=None)


@contextmanager
def start_workflow(run_id: str, workflow: str) -> Iterator[str | None]:
    """The client's span around starting a run; yields the ``traceparent`` to store
    in its ``run_started`` event (``None`` without an SDK)."""
    if not enabled():
        yield None
        return
    span = _tracer.start_span(
        SPAN_START_WORKFLOW, kind=SpanKind.PRODUCER, attributes={RUN_ID: run_id, WORKFLOW: workflow}
    )
    parent = traceparent(span)
    token = otel_context.attach(trace.set_span_in_context(span))
    starting = _starting.set((run_id, parent))
    try:
        yield parent
    except Exception as exc:  # as the API's use_span: not a cancellation or exit
        _failed(span, exc)
        raise
    finally:
        _starting.reset(starting)
        otel_context.detach(token)
        span.end()


@contextmanager
def schedule_start(run_id: str, workflow: str, schedule: str) -> Iterator[Span | None]:
    """A worker's span around starting schedule ``schedule``'s run ``run_id`` for
    a tick (a root span: the tick, not the loop that found it, starts the trace);
    yields the span (``None`` without an SDK), whose ``traceparent`` the run's
    ``run_started`` event keeps."""
    if not enabled():
        yield None
        return
    attributes = {RUN_ID: run_id, WORKFLOW: workflow, SCHEDULE: schedule}
    with _tracer.start_as_current_span(
        SPAN_START_WORKFLOW, context=Context(), kind=SpanKind.PRODUCER, attributes=attributes
    ) as span:
        yield span


def adopted_traceparent(run_id: str) -> str | None:
    """The ``traceparent`` of run ``run_id`` if this task's context comes from
    the client call that just started it (a local worker adopting the run)."""
    found = _starting.get()
    return found[1] if found is not None and found[0] == run_id else None


class Turn:
    """The span of one lease turn (:func:`begin_turn`), current in the driver's
    context until :func:`end_turn`."""

    __slots__ = ("_token", "span")

    def __init__(self, span: Span, token: object) -> None:
        self.span = span
        self._token = token

    @property
    def traceparent(self) -> str | None:
        """What children started in this turn continue."""
        return traceparent(self.span)


def begin_turn(
    parent: str | None, run_id: str, workflow: str, worker: str, start_time: int | None = None
) -> Turn:
    """Start the span of one lease turn of a run, a child of the run's stored
    ``parent`` context (never of the claim loop's), and make it current in the
    calling task's context, so the step attempts the turn starts are its
    children; end it with :func:`end_turn` in the same task.
    ``start_time``: nanoseconds since the epoch."""
    context = context_of(parent)
    unsampled = _unsampled(context)
    if unsampled is not None and context is not None:
        # Not recorded: the stored context itself is current for the turn.
        return Turn(unsampled, otel_context.attach(context))
    span = _tracer.start_span(
        SPAN_RUN,
        context=context or _ROOT,
        kind=SpanKind.CONSUMER,
        attributes={RUN_ID: run_id, WORKFLOW: workflow, WORKER: worker},
        start_time=start_time,
    )
    return Turn(span, otel_context.attach(trace.set_span_in_context(span)))


def end_turn(turn: Turn, error: BaseException | None = None) -> None:
    """End a lease turn's span (an error span if the turn raised ``error``, an
    ``Exception``: a cancellation is no error, as with the API's ``use_span``)."""
    otel_context.detach(turn._token)  # type: ignore[arg-type]
    if isinstance(error, Exception):
        _failed(turn.span, error)
    turn.span.end()


def begin_step(
    run_id: str,
    workflow: str,
    step: str,
    attempt: int,
    *,
    queue: str | None = None,
    parent: str | None = None,
) -> Span | None:
    """Start the span of one step attempt and make it current in the context
    this is called in: call it in the attempt's own (copied) context, so code
    in the step nests its spans under it; end it with :func:`end_step`.

    In the worker that drives the run it is a child of the current
    ``keel.run`` span; a dispatched step's attempt on a queue's worker gives
    the run's stored ``parent`` context instead.

    ``None`` (no span, and nothing to end) when the run's trace is not sampled
    and the sampler would drop the span anyway (:func:`follows_parent`)."""
    # In the driving worker the turn's context is current; a queue's worker
    # continues the run's stored one (or starts a trace: none stored).
    if queue is None:
        context = None
        if _unsampled(None) is not None:
            return None
    else:
        context = context_of(parent)
        if context is not None and _unsampled(context) is not None:
            otel_context.attach(context)  # the attempt's own context, as below
            return None
    attributes: dict[str, AttributeValue] = {
        RUN_ID: run_id,
        WORKFLOW: workflow,
        STEP: step,
        ATTEMPT: attempt,
    }
    if queue is None:
        span = _tracer.start_span(SPAN_STEP, attributes=attributes)
    else:
        attributes[QUEUE] = queue
        span = _tracer.start_span(
            SPAN_STEP, context=context or _ROOT, kind=SpanKind.CONSUMER, attributes=attributes
        )
    # Never detached: the context is the attempt's own and ends with it.
    otel_context.attach(trace.set_span_in_context(span))
    return span


def end_step(span: Span | None, error: BaseException | None) -> None:
    """End a step attempt's span (``None``: :func:`begin_step` made none); an
    attempt that raised is an error span."""
    if span is None:
        return
    if error is not None:
        _failed(span, error)
    span.end()


@contextmanager
def signal_send(run_id: str, name: str) -> Iterator[Span]:
    """The client's span around sending signal ``name`` to run ``run_id``."""
    with _tracer.start_as_current_span(
        SPAN_SIGNAL_SEND, kind=SpanKind.PRODUCER, attributes={RUN_ID: run_id, SIGNAL: name}
    ) as span:
        yield span


@contextmanager
def child_start(run_id: str, workflow: str, children: Mapping[str, str]) -> Iterator[Span]:
    """The span around the write that starts ``children`` (run id -> workflow)
    of run ``run_id`` (none in a trace that is not sampled: see :func:`begin_step`)."""
    unsampled = _unsampled(None)
    if unsampled is not None:
        yield unsampled
        return
    attributes: dict[str, AttributeValue] = {
        RUN_ID: run_id,
        WORKFLOW: workflow,
        CHILD_RUN_IDS: list(children),
        "keel.child.workflows": sorted(set(children.values())),
    }
    with _tracer.start_as_current_span(SPAN_CHILD_START, attributes=attributes) as span:
        yield span


async def stored_traceparent(store: Store, run_id: str) -> str | None:
    """The ``traceparent`` kept in run ``run_id``'s ``run_started`` event (one
    read of one row; ``None`` when it has none). Only worth reading when
    :func:`enabled`."""
    first = await store.reads.first_event(run_id)
    if first is None or first.type != EventType.RUN_STARTED.value:
        return None
    event = decode(EventType.RUN_STARTED, first.data)
    found = getattr(event, "traceparent", UNSET)
    return found if isinstance(found, str) else None
