"""The critical path of one sequential 3-step workflow: median time between its events.

    .venv/bin/python benchmarks/timeline_sqlite.py [--n 800] [--synchronous FULL]

Marks the client's store calls, the writer thread's transactions and the
driver's step starts/results (by wrapping them from outside), runs ``n``
workflows one at a time, and prints the median gap before each event over the
workflows whose events came in the most common order.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SYNCHRONOUS, scratch_db, sqlite_store_methods
from bench_sqlite import WORKFLOWS

import keel
from keel.store.sqlite import SQLiteStore, _threads
from keel.worker.inflight import Inflight
from keel.worker.plan import steps

_log: list[tuple[float, str]] = []


def _mark(what: str) -> None:
    _log.append((time.perf_counter(), what))


def _instrument() -> None:
    for name, cls, method in sqlite_store_methods(("runs.create", "runs.commit", "reads.get_run")):
        original = getattr(cls, method)

        def wrap(original: Any = original, name: str = name) -> Any:
            async def timed(*args: Any, **kwargs: Any) -> Any:
                _mark(f"{name} called")
                result = await original(*args, **kwargs)
                _mark(f"{name} returned")
                return result

            return timed

        setattr(cls, method, wrap())
    write = _threads.DbThread._write

    def _write(self: Any, conn: Any, batch: Any, **kw: Any) -> Any:
        inline = threading.current_thread() is threading.main_thread()
        where = "inline" if inline else "writer thread"
        _mark(f"  {where}: BEGIN")
        outcomes = write(self, conn, batch, **kw)
        _mark(f"  {where}: COMMITted")
        return outcomes

    _threads.DbThread._write = _write  # type: ignore[method-assign]
    start = Inflight.start_attempt

    def _start_attempt(self: Any, cmd: Any, attempt: int) -> None:
        _mark("step task created")
        start(self, cmd, attempt)

    Inflight.start_attempt = _start_attempt  # type: ignore[method-assign]
    plan = steps.plan_attempt_ended

    def _plan_attempt_ended(*args: Any) -> Any:
        _mark("step result recorded")  # planned here, journaled at once
        return plan(*args)

    steps.plan_attempt_ended = _plan_attempt_ended


async def _run(path: Path, n: int, synchronous: str, steps: str) -> list[list[tuple[float, str]]]:
    wf = WORKFLOWS[steps]
    runs = []
    async with keel.Worker(SQLiteStore(path, synchronous=synchronous)) as worker:
        client = worker.client()
        for i in range(50):  # warm-up
            await (await client.start(wf, i)).result()
        for i in range(n):
            _log.clear()
            _mark("client.start()")
            handle = await client.start(wf, i)
            await handle.result()
            _mark("result() returned")
            runs.append(list(_log))
    return runs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=800)
    p.add_argument("--synchronous", default="FULL", type=str.upper, choices=SYNCHRONOUS)
    p.add_argument("--db-dir", default=None)
    p.add_argument("--steps", default="async", choices=("async", "sync"))
    args = p.parse_args(argv)
    _instrument()
    with scratch_db(args.db_dir, "timeline") as path:
        runs = asyncio.run(_run(path, args.n, args.synchronous, args.steps))
    shapes = collections.Counter(tuple(what for _, what in run) for run in runs)
    shape, count = shapes.most_common(1)[0]
    rows = [run for run in runs if tuple(what for _, what in run) == shape]
    print(
        f"{count} of {len(runs)} workflows had this order of events "
        f"(steps={args.steps}, synchronous={args.synchronous}); median gap before each event:"
    )
    for i in range(1, len(shape)):
        gap = statistics.median(row[i][0] - row[i - 1][0] for row in rows)
        print(f"  +{gap * 1e6:6.0f} us  {shape[i]}")
    total = statistics.median(row[-1][0] - row[0][0] for row in rows)
    print(f"median start->result: {total * 1e3:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
