"""Keel on SQLite: 3-step workflows per second, next to the raw SQLite commit rate.

Runs N workflows of three steps (each step returns a small int) with an
in-process ``keel.Worker`` and its client (``worker.client()``, which hands
each new run to the worker already leased), two ways:

* sequential: start one, wait for its result, start the next;
* concurrent: a window of C runs in flight (C client tasks, each starting and
  awaiting runs one after another).

Steps are async, sync (run on the worker's thread pool), or both (default).
For every repetition the raw single-row commit rate of the same directory with
the same settings is measured right before and right after Keel's figures;
medians over the repetitions are printed.

    .venv/bin/python benchmarks/bench_sqlite.py                 # defaults below
    .venv/bin/python benchmarks/bench_sqlite.py --synchronous NORMAL --json

Figures printed per case: workflows/s, p50/p99 start->result latency, Keel's
commits (SQLite transactions) per workflow, counted by wrapping the store's
writer thread, the raw-commit bound = raw commits/s / commits per workflow, and
Keel's figure as a fraction of that bound.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    SYNCHRONOUS,
    Counts,
    StoreCounters,
    median,
    percentile,
    raw_commit_rate,
    scratch_db,
)

import keel
from keel.store.sqlite import SQLiteStore

# --- the workflows ---------------------------------------------------------------------------


#: Seconds of work each step does (``--step-ms``): async steps await it, as a
#: step waiting on I/O would; sync steps compute for it on the worker's thread
#: pool. 0: the trivial steps, where Keel's own cost per step is all there is.
STEP_SECONDS = 0.0


@keel.step(name="bench.add_async")
async def add_async(x: int) -> int:
    if STEP_SECONDS:
        await asyncio.sleep(STEP_SECONDS)
    return x + 1


@keel.step(name="bench.add_sync")
def add_sync(x: int) -> int:
    if STEP_SECONDS:
        until = time.perf_counter() + STEP_SECONDS
        while time.perf_counter() < until:
            pass
    return x + 1


@keel.workflow(name="bench.three_async")
async def three_async(x: int) -> int:
    a = await add_async.aio(x)
    b = await add_async.aio(a)
    return await add_async.aio(b)


@keel.workflow(name="bench.three_sync")
async def three_sync(x: int) -> int:
    a = await add_sync.aio(x)
    b = await add_sync.aio(a)
    return await add_sync.aio(b)


WORKFLOWS = {"async": three_async, "sync": three_sync}
#: Journal writes one run makes, from the code: create_run (run row + run_started),
#: one fenced append before each of steps 2 and 3 (step 1's result must be durable
#: before step 2 starts), and finish_run (step 3's result + run_completed).
WRITES_PER_WORKFLOW = 4


# --- one measured case ---------------------------------------------------------------------


@dataclass
class CaseResult:
    steps: str  # async | sync
    mode: str  # sequential | concurrent
    n: int
    concurrency: int
    seconds: float
    wf_per_s: float
    p50_ms: float
    p99_ms: float
    cpu_pct: float  # process CPU time / wall time (2 cores = 200 %)
    cpu_ms_per_wf: float  # process CPU time per workflow (all threads)
    commits: int  # SQLite transactions (group commits) during the timed part
    write_ops: int  # store write operations during the timed part
    read_ops: int  # store read operations during the timed part
    writer_busy_pct: float  # writer thread time inside transactions / wall time
    commits_per_wf: float
    writes_per_wf: float
    reads_per_wf: float
    sql_commits: int  # from the trace callback, when --trace-sql


async def _one(client: Any, wf: Any, x: int, latencies: list[float]) -> None:
    t0 = time.perf_counter()
    handle = await client.start(wf, x)
    result = await handle.result()
    latencies.append(time.perf_counter() - t0)
    if result != x + 3:
        raise AssertionError(f"workflow({x}) returned {result!r}, expected {x + 3}")


async def _sequential(client: Any, wf: Any, n: int, base: int, latencies: list[float]) -> None:
    for i in range(n):
        await _one(client, wf, base + i, latencies)


async def _windowed(
    client: Any, wf: Any, n: int, window: int, base: int, latencies: list[float]
) -> None:
    counter = iter(range(n))

    async def lane() -> None:
        for i in counter:
            await _one(client, wf, base + i, latencies)

    await asyncio.gather(*(lane() for _ in range(min(window, n))))


async def run_case(
    path: Path,
    *,
    steps: str,
    mode: str,
    n: int,
    concurrency: int,
    synchronous: str,
    counters: StoreCounters,
    warmup: int,
) -> CaseResult:
    """Open a fresh store and worker, warm up, then time ``n`` workflows."""
    wf = WORKFLOWS[steps]
    window = 1 if mode == "sequential" else concurrency
    store = SQLiteStore(path, synchronous=synchronous)
    # Enough capacity that every start is adopted by the local worker (no claims).
    worker = keel.Worker(store, concurrency=max(100, window))
    async with worker:
        client = worker.client()
        warm: list[float] = []
        await _windowed(client, wf, warmup, window, 10_000_000, warm)
        latencies: list[float] = []
        gc.collect()
        before = counters.snapshot()
        cpu0, t0 = time.process_time(), time.perf_counter()
        if window == 1:
            await _sequential(client, wf, n, 0, latencies)
        else:
            await _windowed(client, wf, n, window, 0, latencies)
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        c: Counts = counters.snapshot().minus(before)
    return CaseResult(
        steps=steps,
        mode=mode,
        n=n,
        concurrency=window,
        seconds=wall,
        wf_per_s=n / wall,
        p50_ms=percentile(latencies, 50) * 1e3,
        p99_ms=percentile(latencies, 99) * 1e3,
        cpu_pct=100.0 * cpu / wall,
        cpu_ms_per_wf=1e3 * cpu / n,
        commits=c.write_txns,
        write_ops=c.write_ops,
        read_ops=c.read_ops,
        writer_busy_pct=100.0 * c.write_busy / wall,
        commits_per_wf=c.write_txns / n,
        writes_per_wf=c.write_ops / n,
        reads_per_wf=c.read_ops / n,
        sql_commits=c.sql_commits,
    )


# --- the whole run ------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1000, help="workflows per case (default 1000)")
    p.add_argument(
        "--concurrency", type=int, default=100, help="runs in flight, concurrent case (100)"
    )
    p.add_argument("--synchronous", default="FULL", type=str.upper, choices=SYNCHRONOUS)
    p.add_argument("--db-dir", default=None, help="directory of the db files (default: temp dir)")
    p.add_argument("--steps", default="both", choices=("async", "sync", "both"))
    p.add_argument("--mode", default="both", choices=("sequential", "concurrent", "both"))
    p.add_argument("--reps", type=int, default=3, help="repetitions; medians are reported (3)")
    p.add_argument("--warmup", type=int, default=50, help="untimed workflows per case (50)")
    p.add_argument(
        "--step-ms",
        type=float,
        default=0.0,
        help="work per step in ms: async steps await it (I/O), sync steps compute (CPU); 0",
    )
    p.add_argument("--raw-seconds", type=float, default=0.75, help="length of each raw probe")
    p.add_argument(
        "--trace-sql", action="store_true", help="also count COMMITs with a sqlite trace callback"
    )
    p.add_argument("--json", action="store_true", help="print one JSON document instead")
    add_observe_args(p)
    args = p.parse_args(argv)
    if args.n < 1 or args.concurrency < 1 or args.reps < 1 or args.warmup < 0 or args.step_ms < 0:
        p.error("--n, --concurrency and --reps must be >= 1, --warmup and --step-ms >= 0")
    return args


def cases(args: argparse.Namespace) -> list[tuple[str, str]]:
    steps = ["async", "sync"] if args.steps == "both" else [args.steps]
    modes = ["sequential", "concurrent"] if args.mode == "both" else [args.mode]
    return [(s, m) for s in steps for m in modes]


def run(args: argparse.Namespace) -> dict[str, Any]:
    raw: list[float] = []
    results: dict[tuple[str, str], list[CaseResult]] = {c: [] for c in cases(args)}
    t_start = time.perf_counter()
    with StoreCounters(trace_sql=args.trace_sql) as counters:
        for rep in range(args.reps):
            raw.append(raw_commit_rate(args.db_dir, args.synchronous, seconds=args.raw_seconds))
            for steps, mode in results:
                with scratch_db(args.db_dir, f"keel-{rep}-{steps}-{mode}") as path:
                    results[(steps, mode)].append(
                        asyncio.run(
                            run_case(
                                path,
                                steps=steps,
                                mode=mode,
                                n=args.n,
                                concurrency=args.concurrency,
                                synchronous=args.synchronous,
                                counters=counters,
                                warmup=args.warmup,
                            )
                        )
                    )
            raw.append(raw_commit_rate(args.db_dir, args.synchronous, seconds=args.raw_seconds))
    raw_rate = median(raw)
    summary = []
    for (steps, mode), reps in results.items():
        row: dict[str, Any] = {"steps": steps, "mode": mode}
        for key in (
            "wf_per_s",
            "p50_ms",
            "p99_ms",
            "cpu_pct",
            "cpu_ms_per_wf",
            "writer_busy_pct",
            "commits_per_wf",
            "writes_per_wf",
            "reads_per_wf",
        ):
            row[key] = median([getattr(r, key) for r in reps])
        row["concurrency"] = reps[0].concurrency
        cpw = row["commits_per_wf"]
        # The raw-commit bound: what Keel could reach if its only cost were its
        # commits, each as dear as a raw single-row commit.
        row["bound_wf_per_s"] = raw_rate / cpw if cpw else math.inf
        row["fraction_of_bound"] = row["wf_per_s"] / row["bound_wf_per_s"]
        # The bound if every store write were its own commit (no group commit).
        row["unbatched_bound_wf_per_s"] = raw_rate / WRITES_PER_WORKFLOW
        summary.append(row)
    return {
        "settings": {
            "n": args.n,
            "concurrency": args.concurrency,
            "synchronous": args.synchronous,
            "db_dir": args.db_dir or "(temp dir)",
            "reps": args.reps,
            "warmup": args.warmup,
            "python": sys.version.split()[0],
            "sqlite": __import__("sqlite3").sqlite_version,
            "cpus": os.cpu_count(),
        },
        "raw_commits_per_s": raw_rate,
        "raw_probes": raw,
        "summary": summary,
        "runs": {f"{s}/{m}": [asdict(r) for r in reps] for (s, m), reps in results.items()},
        "total_seconds": time.perf_counter() - t_start,
    }


TARGET_WF_PER_S = 800.0  # with synchronous=FULL, on the 2-core development machine
TARGET_FRACTION = 0.5  # of the raw-commit bound


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def render(report: dict[str, Any]) -> str:
    s = report["settings"]
    raw = report["raw_commits_per_s"]
    probes = ", ".join(f"{r:,.0f}" for r in report["raw_probes"])
    lines = [
        "Keel SQLite benchmark: 3-step workflows"
        + (f" ({s['step_ms']:g} ms of work per step)" if s.get("step_ms") else "")
        + f", n={s['n']}, synchronous={s['synchronous']}, "
        f"{s['reps']} reps (medians), db dir {s['db_dir']}",
        f"Python {s['python']}, SQLite {s['sqlite']}, {s['cpus']} CPUs",
        f"raw SQLite commit rate (WAL, BEGIN IMMEDIATE, 1-row INSERT, COMMIT): {raw:,.0f}/s "
        f"(probes before/after each rep: {probes})",
        "",
        f"{'steps':<5} {'mode':<10} {'wf/s':>6} {'p50 ms':>7} {'p99 ms':>7} {'commit/wf':>9} "
        f"{'bound':>7} {'of bound':>8} {'of raw/4':>8} {'write/wf':>8} {'read/wf':>7} "
        f"{'CPU ms/wf':>9} {'writer%':>7}",
    ]
    for r in report["summary"]:
        mode = "seq" if r["mode"] == "sequential" else f"conc C={r['concurrency']}"
        lines.append(
            f"{r['steps']:<5} {mode:<10} {r['wf_per_s']:>6,.0f} {r['p50_ms']:>7.2f} "
            f"{r['p99_ms']:>7.2f} {r['commits_per_wf']:>9.2f} {r['bound_wf_per_s']:>7,.0f} "
            f"{100 * r['fraction_of_bound']:>7.0f}% "
            f"{100 * r['wf_per_s'] / r['unbatched_bound_wf_per_s']:>7.0f}% "
            f"{r['writes_per_wf']:>8.2f} {r['reads_per_wf']:>7.2f} {r['cpu_ms_per_wf']:>9.3f} "
            f"{r['writer_busy_pct']:>6.0f}%"
        )
    lines += [
        "",
        "commit/wf  SQLite transactions per workflow, counted at the store's writer thread "
        "(group commit batches concurrent writes)",
        "bound      raw commits/s / commit/wf: Keel's rate if its commits were its only cost",
        f"of raw/4   wf/s against raw / {WRITES_PER_WORKFLOW} = {raw / WRITES_PER_WORKFLOW:,.0f} "
        f"wf/s, the bound without group commit ({WRITES_PER_WORKFLOW} durable writes per workflow)",
        "write/wf, read/wf  store operations; CPU ms/wf  process CPU (all threads) per workflow; "
        "writer%  writer thread time in transactions / wall",
    ]
    if s["synchronous"] == "FULL":
        for r in report["summary"]:
            unbatched = r["wf_per_s"] / r["unbatched_bound_wf_per_s"]
            lines.append(
                f"target {r['steps']}/{r['mode']}: {r['wf_per_s']:,.0f} wf/s >= "
                f"{TARGET_WF_PER_S:.0f} {_verdict(r['wf_per_s'] >= TARGET_WF_PER_S)}; "
                f"{100 * r['fraction_of_bound']:.0f}% of bound >= {100 * TARGET_FRACTION:.0f}% "
                f"{_verdict(r['fraction_of_bound'] >= TARGET_FRACTION)}; "
                f"{100 * unbatched:.0f}% of raw/{WRITES_PER_WORKFLOW} "
                f"{_verdict(unbatched >= TARGET_FRACTION)}"
            )
    lines.append(f"total {report['total_seconds']:.1f} s")
    return "\n".join(lines)


OBSERVE = ("none", "metrics", "traces", "all")


def add_observe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--observe",
        nargs="?",
        const="all",
        default="none",
        choices=OBSERVE,
        help="install the OpenTelemetry SDK first: traces (spans to a batch processor whose "
        "exporter drops them), metrics (a Prometheus reader, as `keel worker --metrics-port` "
        "does), or all (both; the default of a bare --observe)",
    )
    p.add_argument(
        "--sample",
        type=float,
        default=1.0,
        help="with traces on: the fraction of traces recorded (parent-based ratio sampler; 1.0)",
    )


def install_observability(what: str = "all", sample: float = 1.0) -> None:
    """Tracing and/or metrics on, as an application would turn them on: the SDK's
    tracer provider with a batch span processor (exporting to nowhere, so the
    network is not measured) and Keel's own Prometheus meter provider."""
    if what in ("traces", "all"):
        from collections.abc import Sequence

        from opentelemetry import trace
        from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        class Dropped(SpanExporter):
            def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(sample)))
        provider.add_span_processor(BatchSpanProcessor(Dropped()))
        trace.set_tracer_provider(provider)
    if what in ("metrics", "all"):
        from keel.observe.endpoints import install_meter_provider

        install_meter_provider()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    global STEP_SECONDS
    STEP_SECONDS = args.step_ms / 1e3
    install_observability(args.observe, args.sample)
    report = run(args)
    report["settings"]["observe"] = args.observe
    report["settings"]["sample"] = args.sample
    report["settings"]["step_ms"] = args.step_ms
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(render(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
