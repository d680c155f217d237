"""``/metrics``, ``/healthz`` and ``/readyz`` over HTTP, for ``keel worker
--metrics-port``.

A small threaded server from the standard library; each answer is computed on
the worker's event loop (where its store lives) and handed back to the
server's thread. ``/healthz`` and ``/readyz`` answer 200 when well and 503
when not, with the report as JSON.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from keel.errors import ConfigurationError
from keel.observe import health, metrics
from keel.store.ports import Store

__all__ = ["Endpoints", "install_meter_provider"]

log = logging.getLogger("keel.observe")

#: Seconds a request waits for its answer from the event loop.
ANSWER_TIMEOUT = 30.0


def install_meter_provider() -> None:
    """Install the OpenTelemetry SDK's ``MeterProvider`` with a Prometheus reader
    (into prometheus_client's default registry) as this process's provider.

    For Keel's own process (``keel worker``); an application installs its own.
    Raises :class:`~keel.errors.ConfigurationError` without the ``metrics`` extra.
    """
    try:
        from opentelemetry import metrics as otel_metrics
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
    except ImportError as exc:
        raise ConfigurationError(
            f"--metrics-port needs the metrics extra: pip install 'keel[metrics]' ({exc})"
        ) from None
    current = otel_metrics.get_meter_provider()
    if isinstance(current, MeterProvider):
        # Set already (e.g. by opentelemetry-instrument): it cannot be replaced.
        log.warning(
            "a meter provider is already installed (%s): /metrics shows Keel's counters only "
            "if it has a Prometheus reader; the gauges read from the database are always there",
            type(current).__name__,
        )
        return
    # No exemplars: the Prometheus text format does not carry them, and offering
    # each measurement to a reservoir costs on every step.
    provider = MeterProvider(
        metric_readers=[PrometheusMetricReader()], exemplar_filter=AlwaysOffExemplarFilter()
    )
    otel_metrics.set_meter_provider(provider)


class Endpoints:
    """Serves the three endpoints for ``store`` on ``host:port`` (port 0: any
    free port, see :attr:`port`) until :meth:`close`."""

    def __init__(
        self,
        store: Store,
        loop: asyncio.AbstractEventLoop,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        overdue_after: float = health.DEFAULT_OVERDUE_AFTER,
    ) -> None:
        self.store = store
        self.loop = loop
        self.overdue_after = overdue_after
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="keel-metrics", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, path: str) -> tuple[int, str, bytes]:
        """Status, content type and body for a GET of ``path`` (on the server's thread)."""
        route: dict[str, Callable[[], Awaitable[tuple[int, str, bytes]]]] = {
            "/metrics": self._metrics,
            "/healthz": self._healthz,
            "/readyz": self._readyz,
        }
        found = route.get(path.split("?", 1)[0])
        if found is None:
            return 404, "text/plain; charset=utf-8", b"not found: try /metrics, /healthz, /readyz\n"
        if found == self._metrics:
            # This process's metrics are collected here, off the event loop;
            # only the store's reads run on it.
            process = metrics.process_metrics()
            status, ctype, gauges = self._on_loop(found)
            return status, ctype, process + gauges
        return self._on_loop(found)

    def _on_loop(
        self, fn: Callable[[], Awaitable[tuple[int, str, bytes]]]
    ) -> tuple[int, str, bytes]:
        future = asyncio.run_coroutine_threadsafe(_call(fn), self.loop)
        return future.result(ANSWER_TIMEOUT)

    async def _metrics(self) -> tuple[int, str, bytes]:
        return 200, metrics.CONTENT_TYPE, await metrics.store_gauges(self.store)

    async def _healthz(self) -> tuple[int, str, bytes]:
        return _report(await health.liveness(self.store), live=True)

    async def _readyz(self) -> tuple[int, str, bytes]:
        return _report(await health.check(self.store, overdue_after=self.overdue_after))


async def _call(
    fn: Callable[[], Awaitable[tuple[int, str, bytes]]],
) -> tuple[int, str, bytes]:
    return await fn()


def _report(report: health.HealthReport, *, live: bool = False) -> tuple[int, str, bytes]:
    well = report.live if live else report.ready
    body = json.dumps(report.to_dict()).encode() + b"\n"
    return (200 if well else 503), "application/json", body


def _handler(endpoints: Endpoints) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "keel"

        def do_GET(self) -> None:
            try:
                status, ctype, body = endpoints.answer(self.path)
            except Exception as exc:  # the loop is gone or stuck: say so, do not hang
                log.warning("metrics endpoint %s failed: %s", self.path, exc)
                status, ctype, body = 503, "text/plain; charset=utf-8", b"unavailable\n"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("metrics endpoint: " + format, *args)

    return Handler
