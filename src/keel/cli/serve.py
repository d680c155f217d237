"""``keel worker``: run a Worker until SIGTERM/SIGINT, then drain and exit cleanly."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from keel.core.facts import FACT_THRESHOLD
from keel.core.redact import redact
from keel.errors import ConfigurationError
from keel.worker import Worker
from keel.workflow.registry import default_registry

if TYPE_CHECKING:
    from keel.observe.endpoints import Endpoints

log = logging.getLogger("keel.cli.worker")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

Callback = Callable[[signal.Signals], None]


@dataclass(frozen=True)
class WorkerOptions:
    """What ``keel worker`` was asked for."""

    url: str
    modules: Sequence[str]
    concurrency: int
    lease_ttl: float
    poll_interval: float
    cache: bool
    drain_timeout: float
    queues: Mapping[str, int] = field(default_factory=dict)  # queue -> limit
    task_concurrency: int = 10
    schedules: bool = True  # fire due schedules of the imported workflows
    metrics_port: int | None = None  # serve /metrics, /healthz, /readyz there
    metrics_host: str = "127.0.0.1"
    retain: float | None = None  # prune runs that ended longer ago (seconds); None: keep all
    fact_threshold: int | None = FACT_THRESHOLD  # bytes; None: every result in the journal


async def serve(opts: WorkerOptions) -> None:
    """Work until a stop signal arrives; then stop claiming, drain and release leases."""
    worker = Worker(
        opts.url,
        concurrency=opts.concurrency,
        lease_ttl=opts.lease_ttl,
        poll_interval=opts.poll_interval,
        cache=opts.cache,
        queues=dict(opts.queues) or None,
        task_concurrency=opts.task_concurrency,
        schedules=opts.schedules,
        retention=opts.retain,
        fact_threshold=opts.fact_threshold,
    )
    stop = asyncio.Event()
    received: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.warning("received %s while draining; still draining", sig.name)
            return
        received.append(sig.name)
        stop.set()

    loop = asyncio.get_running_loop()
    installed = _install(loop, on_signal)
    endpoints: Endpoints | None = None
    try:
        await worker.start()
        if opts.metrics_port is not None:
            endpoints = _serve_endpoints(worker, opts)
        names = default_registry.names()
        log.info(
            "keel worker %s started: db=%s modules=%s workflows=[%s] concurrency=%d queues=[%s]",
            worker.owner,
            redact(worker.store.url),
            ",".join(opts.modules),
            ", ".join(_with_versions(names)),
            opts.concurrency,
            ", ".join(f"{q}={n}" for q, n in opts.queues.items()),
        )
        if not names:
            log.warning("no workflows are registered: did the modules define any @keel.workflow?")
        await _first(stop.wait(), worker.wait_stopped_or_failed())
        if worker.failure is not None:  # a damaged database: logged; exit non-zero
            await worker.stop(timeout=opts.drain_timeout)
            raise worker.failure
        held = len(worker.active_runs)
        log.info(
            "received %s: draining %d run(s) (up to %gs)",
            received[0],
            held,
            opts.drain_timeout,
        )
        started = time.monotonic()
        abandoned = await worker.stop(timeout=opts.drain_timeout)
        if abandoned:  # each one is logged by the worker
            log.warning(
                "keel worker %s stopped after the %gs drain timeout: abandoned %d step "
                "attempt(s), which will run again elsewhere; leases released; exiting",
                worker.owner,
                opts.drain_timeout,
                len(abandoned),
            )
        else:
            log.info(
                "keel worker %s stopped: drained in %.2fs, leases released",
                worker.owner,
                time.monotonic() - started,
            )
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await worker.stop(timeout=opts.drain_timeout)  # no-op after a clean stop
        if endpoints is not None:
            endpoints.close()


def _serve_endpoints(worker: Worker, opts: WorkerOptions) -> Endpoints:
    """Start serving /metrics, /healthz and /readyz for the worker's store."""
    from keel.observe.endpoints import Endpoints

    assert opts.metrics_port is not None
    try:
        endpoints = Endpoints(
            worker.store,
            asyncio.get_running_loop(),
            host=opts.metrics_host,
            port=opts.metrics_port,
        )
    except OSError as exc:
        raise ConfigurationError(
            f"cannot serve metrics on {opts.metrics_host}:{opts.metrics_port}: {exc.strerror}"
        ) from None
    endpoints.start()
    log.info(
        "serving /metrics, /healthz and /readyz on http://%s:%d",
        opts.metrics_host,
        endpoints.port,
    )
    return endpoints


async def _first(*waits: Coroutine[Any, Any, Any]) -> None:
    """Wait until one of ``waits`` is done; cancel the others."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def _with_versions(names: list[str]) -> list[str]:
    """Workflow names, with a count where several versions are registered side by side."""
    counts = {name: len(default_registry.versions(name)) for name in names}
    return [name if counts[name] == 1 else f"{name} ({counts[name]} versions)" for name in names]


def _install(loop: asyncio.AbstractEventLoop, handler: Callback) -> list[signal.Signals]:
    """Route SIGTERM/SIGINT to ``handler`` on the loop (no KeyboardInterrupt mid-step)."""
    installed = []
    for sig in STOP_SIGNALS:
        try:
            loop.add_signal_handler(sig, handler, sig)
        except (NotImplementedError, RuntimeError):  # e.g. Windows, or not the main thread
            continue
        installed.append(sig)
    return installed
