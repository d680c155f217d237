"""Keel's metrics, through the OpenTelemetry metrics API, and the Prometheus
exposition that adds the gauges read from the database.

Two kinds of numbers:

* **Events counted by the process that saw them** (instruments of the meter
  ``keel``, no-ops until the application, or ``keel worker --metrics-port``,
  installs an SDK ``MeterProvider``). Summing them over workers is right.
* **State read from the database at scrape time** (:func:`store_gauges`): runs
  per state, the oldest due run's age, queue depth, live workers. Read from the
  one shared database, so several workers never double count them; every
  scrape of any worker (or the dashboard) gives the same values.

No label carries a run id (one series per run would grow without bound).

==============================  =========  =======================  ===========================
OpenTelemetry name              type       attributes               Prometheus name (``keel_``)
==============================  =========  =======================  ===========================
``keel.runs.ended``             counter    workflow, outcome        runs_ended_total
``keel.run.duration``           histogram  workflow, outcome        run_duration_seconds
``keel.step.attempt.duration``  histogram  workflow, step, outcome  step_attempt_duration_seconds
``keel.step.attempt.failures``  counter    workflow, step           step_attempt_failures_total
``keel.claim.latency``          histogram  kind (run, task)         claim_latency_seconds
``keel.queue.wait``             histogram  queue                    queue_wait_seconds
``keel.lease.losses``           counter    workflow                 lease_losses_total
``keel.runs.parked``            counter    workflow                 runs_parked_total
``keel.replay.duration``        histogram  workflow                 replay_duration_seconds
``keel.worker.slots.used``      gauge      kind (run, task)         worker_slots_used
==============================  =========  =======================  ===========================

Durations are in seconds.

Read from the database (:func:`store_gauges`): ``keel_runs{state}``,
``keel_oldest_due_run_age_seconds``, ``keel_queue_depth{queue}``,
``keel_queue_leased{queue}``, ``keel_workers_live``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from keel.store.ports import Store

__all__ = [
    "CONTENT_TYPE",
    "claimed",
    "lease_lost",
    "queue_waited",
    "render_exposition",
    "replayed",
    "run_ended",
    "run_parked",
    "step_attempt_ended",
    "store_gauges",
    "track_slots",
]

#: The content type of the text exposition (Prometheus text format 0.0.4).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds: steps and runs take from milliseconds to days; claims and replays less.
_LONG = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 86400)
_SHORT = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# Created once: a proxy meter delegates to the provider installed later, if any.
_meter = metrics.get_meter("keel")

# Runs ended, counted in a plain dict on the hot path and reported at collection
# time (an observable counter): one dict update per run instead of an SDK call.
_ended_counts: dict[tuple[str, str], int] = {}


def _observe_ended(_options: CallbackOptions) -> Iterable[Observation]:
    return [
        Observation(n, _attrs("workflow", workflow, "outcome", outcome))
        for (workflow, outcome), n in list(_ended_counts.items())
    ]


_meter.create_observable_counter(
    "keel.runs.ended", callbacks=[_observe_ended], description="Runs that ended, by outcome"
)
_run_duration = _meter.create_histogram(
    "keel.run.duration",
    unit="s",
    description="From a run's creation to its end",
    explicit_bucket_boundaries_advisory=_LONG,
)
_attempt_duration = _meter.create_histogram(
    "keel.step.attempt.duration",
    unit="s",
    description="How long one step attempt ran",
    explicit_bucket_boundaries_advisory=_LONG,
)
_attempt_failures = _meter.create_counter(
    "keel.step.attempt.failures", description="Step attempts that raised"
)
_claim_latency = _meter.create_histogram(
    "keel.claim.latency",
    unit="s",
    description="Round trip of one claim of runs or tasks",
    explicit_bucket_boundaries_advisory=_SHORT,
)
_queue_wait = _meter.create_histogram(
    "keel.queue.wait",
    unit="s",
    description="From a dispatched step's task becoming due to a worker claiming it",
    explicit_bucket_boundaries_advisory=_LONG,
)
_lease_losses = _meter.create_counter(
    "keel.lease.losses", description="Runs whose lease this worker lost while driving them"
)
_parked = _meter.create_counter(
    "keel.runs.parked", description="Runs released because their workflow version is not here"
)
_replay_duration = _meter.create_histogram(
    "keel.replay.duration",
    unit="s",
    description="Replaying a run's journal up to its live tail (turns with a journal)",
    explicit_bucket_boundaries_advisory=_SHORT,
)

#: What each worker of this process reports as its slots in use: (runs, tasks).
_slot_sources: dict[int, Callable[[], tuple[int, int]]] = {}


def _observe_slots(_options: CallbackOptions) -> Iterable[Observation]:
    # Read at collection time from the workers' own tables: no cost per run.
    runs = tasks = 0
    for source in list(_slot_sources.values()):
        r, t = source()
        runs, tasks = runs + r, tasks + t
    return [Observation(runs, {"kind": "run"}), Observation(tasks, {"kind": "task"})]


_meter.create_observable_gauge(
    "keel.worker.slots.used",
    callbacks=[_observe_slots],
    description="Runs driven and dispatched-step attempts running in this process",
)


@functools.lru_cache(maxsize=4096)
def _attrs(*pairs: str) -> Mapping[str, str]:
    """One shared attribute mapping per label set (not a new dict per event)."""
    it = iter(pairs)
    return dict(zip(it, it, strict=True))


def run_ended(workflow: str, outcome: str, seconds: float) -> None:
    """A run ended as ``outcome`` (completed, failed, cancelled, continued)."""
    key = (workflow, outcome)
    _ended_counts[key] = _ended_counts.get(key, 0) + 1
    _run_duration.record(max(0.0, seconds), _attrs("workflow", workflow, "outcome", outcome))


# (workflow, step, outcome) -> the attribute sets of one step attempt's
# measurements: its duration's, and its failure count's for an error.
_step_attrs: dict[tuple[str, str, str], tuple[Mapping[str, str], Mapping[str, str]]] = {}


def step_attempt_ended(workflow: str, step: str, seconds: float, outcome: str) -> None:
    """A step attempt ended: ``ok`` (returned), ``error`` (raised: a failure)
    or ``cancelled`` (cut off: lease lost, run cancelled, drain)."""
    key = (workflow, step, outcome)
    found = _step_attrs.get(key)
    if found is None:
        if len(_step_attrs) >= 4096:  # names come from code; a bound all the same
            _step_attrs.clear()
        found = _step_attrs[key] = (
            {"workflow": workflow, "step": step, "outcome": outcome},
            {"workflow": workflow, "step": step},
        )
    _attempt_duration.record(seconds, found[0])
    if outcome == "error":
        _attempt_failures.add(1, found[1])


def claimed(kind: str, seconds: float) -> None:
    """A claim of ``kind`` ("run" or "task") took ``seconds``."""
    _claim_latency.record(seconds, _attrs("kind", kind))


def queue_waited(queue: str, seconds: float) -> None:
    """A task of ``queue`` waited ``seconds`` from due to claimed."""
    _queue_wait.record(max(0.0, seconds), _attrs("queue", queue))


def lease_lost(workflow: str) -> None:
    _lease_losses.add(1, _attrs("workflow", workflow))


def run_parked(workflow: str) -> None:
    _parked.add(1, _attrs("workflow", workflow))


def replayed(workflow: str, seconds: float) -> None:
    _replay_duration.record(seconds, _attrs("workflow", workflow))


def track_slots(key: int, source: Callable[[], tuple[int, int]] | None) -> None:
    """Report what ``source`` says (runs driven, task attempts running) as slots
    in use, under ``key`` (a worker's id); ``None`` stops reporting it."""
    if source is None:
        _slot_sources.pop(key, None)
    else:
        _slot_sources[key] = source


# --- the exposition ---------------------------------------------------------------------


async def store_gauges(store: Store) -> bytes:
    """The gauges read from ``store`` now, in the Prometheus text format.

    Several reads (runs per state counts every row): meant for a scrape every
    few seconds, not for a hot path.
    """
    stats = await store.reads.run_stats()
    queues = await store.tasks.list_queues()
    workers = {v.worker for v in await store.workers.list_versions(live=True)}
    out: list[str] = []
    _gauge(
        out,
        "keel_runs",
        "Runs in each state",
        [((("state", str(state)),), n) for state, n in sorted(stats.by_state.items())],
    )
    _gauge(
        out,
        "keel_oldest_due_run_age_seconds",
        "How long the run that is due longest has waited to be claimed (0: none due)",
        [((), stats.oldest_due_age)],
    )
    _gauge(
        out,
        "keel_queue_depth",
        "Dispatched steps waiting for a worker, by queue (retries not yet due included)",
        (((("queue", q.queue),), q.available) for q in queues),
    )
    _gauge(
        out,
        "keel_queue_leased",
        "Dispatched steps being run now, by queue",
        (((("queue", q.queue),), q.leased) for q in queues),
    )
    _gauge(out, "keel_workers_live", "Workers alive now", [((), len(workers))])
    return "".join(out).encode()


def process_metrics() -> bytes:
    """This process's metrics in prometheus_client's default registry (where
    ``keel worker --metrics-port``, or an application, installed OpenTelemetry's
    Prometheus reader); empty without prometheus_client."""
    try:
        from prometheus_client import REGISTRY, generate_latest
    except ImportError:
        return b""
    return generate_latest(REGISTRY)


async def render_exposition(store: Store) -> bytes:
    """The whole Prometheus text exposition: this process's metrics
    (:func:`process_metrics`), then the gauges read from ``store``
    (:func:`store_gauges`). Serve it with :data:`CONTENT_TYPE`."""
    return process_metrics() + await store_gauges(store)


def _gauge(
    out: list[str],
    name: str,
    help: str,
    samples: Iterable[tuple[tuple[tuple[str, str], ...], float]],
) -> None:
    out.append(f"# HELP {name} {help}\n# TYPE {name} gauge\n")
    for labels, value in samples:
        shown = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
        series = f"{name}{{{shown}}}" if shown else name
        out.append(f"{series} {_number(value)}\n")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return repr(float(value)) if math.isfinite(value) else ("+Inf" if value > 0 else "NaN")
