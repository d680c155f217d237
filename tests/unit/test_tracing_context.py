"""The stored ``traceparent`` parsed by hand, checked against OpenTelemetry's
own W3C propagator: the same span context for valid headers, none for bad ones."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from keel.observe import tracing

_propagator = TraceContextTextMapPropagator()


def _theirs(header: str) -> trace.SpanContext:
    return trace.get_current_span(_propagator.extract({"traceparent": header})).get_span_context()


@pytest.mark.parametrize(
    "header",
    [
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
        "00-ffffffffffffffffffffffffffffffff-0000000000000001-01",
    ],
)
def test_a_valid_traceparent_gives_the_propagators_span_context(header: str) -> None:
    ctx = tracing.context_of(header)
    assert ctx is not None
    ours = trace.get_current_span(ctx).get_span_context()
    theirs = _theirs(header)
    assert (ours.trace_id, ours.span_id, ours.trace_flags, ours.is_remote) == (
        theirs.trace_id,
        theirs.span_id,
        theirs.trace_flags,
        theirs.is_remote,
    )


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # zero trace id
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # zero span id
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01",  # short span id
        "00-0af7651916cd43dd8448eb211c80319z-b7ad6b7169203331-01",  # not hex
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # forbidden version
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x",  # v00 has 4 fields
    ],
)
def test_a_bad_traceparent_gives_no_context(header: str) -> None:
    assert tracing.context_of(header) is None
    assert not _theirs(header).is_valid


def test_no_traceparent_gives_no_context() -> None:
    assert tracing.context_of(None) is None
