"""Which samplers let Keel skip the spans of an unsampled run: only those
known to drop every span whose parent was not sampled."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import sampling

from keel.observe.tracing import follows_parent


@pytest.mark.parametrize(
    "sampler",
    [
        sampling.DEFAULT_ON,  # the SDK's default
        sampling.DEFAULT_OFF,
        sampling.ParentBasedTraceIdRatio(0.1),  # OTEL_TRACES_SAMPLER=parentbased_traceidratio
        sampling.ParentBased(sampling.TraceIdRatioBased(0.01)),
        sampling.ALWAYS_OFF,
    ],
)
def test_samplers_that_drop_children_of_unsampled_parents(sampler: sampling.Sampler) -> None:
    assert follows_parent(sampler)


@pytest.mark.parametrize(
    "sampler",
    [
        sampling.ALWAYS_ON,  # records every span, whatever its parent
        sampling.TraceIdRatioBased(0.5),  # decides by trace id, at its own ratio
        sampling.ParentBased(sampling.ALWAYS_ON, remote_parent_not_sampled=sampling.ALWAYS_ON),
        sampling.ParentBased(sampling.ALWAYS_ON, local_parent_not_sampled=sampling.ALWAYS_ON),
        None,  # not the SDK's tracer
        object(),
    ],
)
def test_other_samplers_are_asked_for_every_span(sampler: object) -> None:
    assert not follows_parent(sampler)
