"""Observability: OpenTelemetry traces (:mod:`~keel.observe.tracing`) and metrics
(:mod:`~keel.observe.metrics`), structured logs (:mod:`~keel.observe.logs`) and
health checks (:mod:`~keel.observe.health`), with the HTTP endpoints a worker
serves (:mod:`~keel.observe.endpoints`).

Depends on ``opentelemetry-api`` only; the SDK and Prometheus reader are
installed by ``keel worker --metrics-port`` (extra ``keel[metrics]``) or by the
application.
"""
