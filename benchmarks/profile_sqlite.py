"""Profile one case of bench_sqlite.py: where does a workflow's time go?

    .venv/bin/python benchmarks/profile_sqlite.py --mode sequential --steps async
    .venv/bin/python benchmarks/profile_sqlite.py --mode concurrent --profiler pyinstrument

* ``--profiler cprofile`` (default) profiles the event-loop thread and prints the
  top functions by own time and by cumulative time; ``--save x.prof`` keeps
  the stats for snakeviz/pstats.
* ``--profiler pyinstrument`` prints pyinstrument's call tree (pip install
  pyinstrument).
* Always printed: how long each store call takes as seen by the awaiting
  coroutine (queueing + the thread hop + SQLite + the hop back), how long the
  writer thread spends in transactions and in COMMIT itself, and how many
  transactions/operations ran.

Neither profiler sees the store's threads (writer/reader/watcher); for a
whole-process view including them and native frames, use py-spy::

    .venv/bin/py-spy record --threads --native -r 500 -f speedscope -o prof.json -- \\
        .venv/bin/python benchmarks/profile_sqlite.py --profiler none --n 3000
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import sqlite3
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SYNCHRONOUS, StoreCounters, percentile, scratch_db, sqlite_store_methods
from bench_sqlite import add_observe_args, install_observability, run_case

_STORE_CALLS = (
    "runs.create",
    "runs.commit",  # the journal writes: append, suspend, finish, ...
    "runs.claim",
    "reads.get_run",
    "reads.history",
    "changes.wait",
    "changes.wait_for_work",
)


@contextmanager
def store_call_timing(samples: dict[str, list[float]]) -> Iterator[None]:
    """Time every SQLiteStore coroutine call of interest, from the caller's side."""
    methods = sqlite_store_methods(_STORE_CALLS)
    originals = {name: (cls, method, getattr(cls, method)) for name, cls, method in methods}

    def timed(name: str, fn: Any) -> Any:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                samples[name].append(time.perf_counter() - t0)

        return wrapper

    for name, (cls, method, fn) in originals.items():
        setattr(cls, method, timed(name, fn))
    try:
        yield
    finally:
        for cls, method, fn in originals.values():
            setattr(cls, method, fn)


class _TimedConnection(sqlite3.Connection):
    """A connection that times its COMMIT statements (the fsync part of a transaction)."""

    commit_times: list[float]

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "COMMIT":
            t0 = time.perf_counter()
            try:
                return super().execute(sql, *args)
            finally:
                self.commit_times.append(time.perf_counter() - t0)
        return super().execute(sql, *args)


@contextmanager
def commit_timing(out: list[float]) -> Iterator[None]:
    """Make the store's connections time COMMIT (wraps ``_schema.connect``)."""
    from keel.store.sqlite import _schema

    original = _schema.connect

    def connect(path: Path, busy_timeout: float, *, any_thread: bool = False) -> sqlite3.Connection:
        conn = sqlite3.connect(
            path,
            timeout=busy_timeout,
            isolation_level=None,
            factory=_TimedConnection,
            check_same_thread=not any_thread,
        )
        conn.commit_times = out
        return conn

    _schema.connect = connect
    try:
        yield
    finally:
        _schema.connect = original


class ThreadCpu:
    """Samples every thread's CPU time from /proc (Linux) while a case runs.

    Threads come and go with the store, so the last sample of each is kept.
    """

    def __init__(self, interval: float = 0.05) -> None:
        self._interval = interval
        self._stop = threading.Event()
        self._seen: dict[int, tuple[str, float, float]] = {}
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._thread = threading.Thread(target=self._run, name="bench-cpu-sampler", daemon=True)

    def _sample(self) -> None:
        for t in threading.enumerate():
            tid = t.native_id
            if tid is None or t is self._thread:
                continue
            try:
                with open(f"/proc/self/task/{tid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            utime, stime = int(fields[11]) / self._tick, int(fields[12]) / self._tick
            self._seen[tid] = (t.name, utime, stime)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def __enter__(self) -> ThreadCpu:
        if os.path.exists("/proc/self/task"):
            self._sample()
            self._start = dict(self._seen)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()
            self._sample()

    def report(self) -> list[tuple[str, float, float]]:
        """(thread name, user s, system s) over the case, summed by name, busiest first."""
        by_name: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        for tid, (name, u, s) in self._seen.items():
            _n, u0, s0 = getattr(self, "_start", {}).get(tid, (name, 0.0, 0.0))
            key = "keel-step-*" if name.startswith("keel-step") else name
            by_name[key][0] += u - u0
            by_name[key][1] += s - s0
        return sorted(((n, u, s) for n, (u, s) in by_name.items()), key=lambda r: -(r[1] + r[2]))


def by_module(prof: cProfile.Profile, n: int) -> str:
    """Own time summed by source file: which layer the event-loop thread's time goes to."""
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    totals: dict[str, float] = defaultdict(float)
    for (filename, _line, func), (_cc, _nc, tottime, _ct, _callers) in stats.items():
        if filename == "~":
            key = f"(builtin) {func}" if "poll" in func else "(builtins: C functions)"
        elif "/keel/" in filename:
            key = "keel/" + filename.split("/keel/", 1)[1]
        elif "/asyncio/" in filename:
            key = "asyncio/" + filename.rsplit("/", 1)[1]
        else:
            key = filename.rsplit("/", 1)[-1]
        totals[key] += tottime
    total = sum(totals.values())
    lines = [f"\n===== cProfile own time by source file (event-loop thread; {total:.2f} s) ====="]
    for key, t in sorted(totals.items(), key=lambda kv: -kv[1])[:25]:
        lines.append(f"  {100 * t / total:5.1f}%  {1e6 * t / n:7.1f} us/wf  {key}")
    return "\n".join(lines) + "\n"


def _ms(values: list[float], q: float) -> str:
    return f"{percentile(values, q) * 1e3:7.3f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=100)
    p.add_argument("--mode", default="sequential", choices=("sequential", "concurrent"))
    p.add_argument("--steps", default="async", choices=("async", "sync"))
    p.add_argument("--synchronous", default="FULL", type=str.upper, choices=SYNCHRONOUS)
    p.add_argument("--db-dir", default=None)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--profiler", default="cprofile", choices=("cprofile", "pyinstrument", "none"))
    p.add_argument("--top", type=int, default=30, help="rows of each cProfile table")
    p.add_argument("--save", default=None, help="write cProfile stats to this file")
    add_observe_args(p)
    args = p.parse_args(argv)
    install_observability(args.observe, args.sample)

    samples: dict[str, list[float]] = defaultdict(list)
    commits: list[float] = []
    with (
        StoreCounters() as counters,
        store_call_timing(samples),
        commit_timing(commits),
        ThreadCpu() as thread_cpu,
        scratch_db(args.db_dir, f"profile-{args.mode}-{args.steps}") as path,
    ):

        def case() -> Any:
            return asyncio.run(
                run_case(
                    path,
                    steps=args.steps,
                    mode=args.mode,
                    n=args.n,
                    concurrency=args.concurrency,
                    synchronous=args.synchronous,
                    counters=counters,
                    warmup=args.warmup,
                )
            )

        profile_text = ""
        if args.profiler == "cprofile":
            prof = cProfile.Profile()
            prof.enable()
            result = case()
            prof.disable()
            if args.save:
                prof.dump_stats(args.save)
            profile_text += by_module(prof, args.n)
            for order in ("tottime", "cumulative"):
                buf = io.StringIO()
                pstats.Stats(prof, stream=buf).strip_dirs().sort_stats(order).print_stats(args.top)
                profile_text += f"\n===== cProfile, event-loop thread, by {order} =====\n"
                profile_text += buf.getvalue().split("\n", 4)[-1]  # drop pstats' preamble
        elif args.profiler == "pyinstrument":
            from pyinstrument import Profiler

            pyi = Profiler(interval=0.0005, async_mode="disabled")
            pyi.start()
            result = case()
            pyi.stop()
            profile_text = pyi.output_text(unicode=False, color=False, show_all=False)
        else:
            result = case()
        total = counters.snapshot()

    print(
        f"{args.mode} {args.steps} n={args.n} C={result.concurrency} "
        f"synchronous={args.synchronous} ({args.profiler}; profilers slow it down):"
    )
    print(
        f"  {result.wf_per_s:,.0f} wf/s, p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, "
        f"CPU {result.cpu_pct:.0f}%, writer busy {result.writer_busy_pct:.0f}%"
    )
    print(
        f"  per workflow: {result.commits_per_wf:.2f} commits, {result.writes_per_wf:.2f} "
        f"store writes, {result.reads_per_wf:.2f} store reads"
    )
    sizes = sorted(total.batch_sizes.items())
    print(f"  group-commit batch sizes (incl. warm-up) size:count {sizes[:12]}")
    print("\n  store call latency as the awaiting coroutine sees it (incl. warm-up):")
    print(f"  {'call':<16} {'count':>7} {'p50 ms':>7} {'p99 ms':>7} {'total s':>8}")
    for name in _STORE_CALLS:
        v = samples.get(name)
        if v:
            print(f"  {name:<16} {len(v):>7} {_ms(v, 50)} {_ms(v, 99)} {sum(v):>8.3f}")
    if commits:
        print(
            f"  {'(COMMIT itself)':<16} {len(commits):>7} {_ms(commits, 50)} {_ms(commits, 99)} "
            f"{sum(commits):>8.3f}"
        )
    print("\n  CPU time by thread over the whole case (incl. warm-up and store open/close):")
    for name, user, system in thread_cpu.report():
        print(f"  {name:<24} user {user:6.2f} s  system {system:6.2f} s")
    if profile_text:
        print(profile_text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
