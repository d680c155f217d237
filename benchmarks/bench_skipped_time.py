"""Skipped time: wall time of simulated weeks with the test kit's TestEnv.

Three cases, on the memory store and on a SQLite file (synchronous=FULL), each
printed with the raw single-row commit rate of the same directory:

* cron week: a nightly schedule (``0 2 * * *``) over 7 simulated days with
  ``env.sleep(days=7)``: 7 ticks, 7 runs, each to completion;
* sleep week: one run sleeping 7 days, finished by auto-advance while its
  result is awaited;
* retries: one step failing 4 times with 10-minute backoff, by auto-advance.

    .venv/bin/python benchmarks/bench_skipped_time.py [--reps 5] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median, raw_commit_rate

import keel
from keel.testing import TestEnv

_failures: dict[str, int] = {}


@keel.workflow(name="bench.nightly")
async def nightly() -> str:
    return keel.now().isoformat()


@keel.workflow(name="bench.week_sleep")
async def week_sleep() -> str:
    await keel.sleep(timedelta(days=7))
    return "awake"


@keel.step(
    name="bench.flaky",
    retry=keel.RetryPolicy(max_attempts=5, initial_interval=600, max_interval=600, jitter=0),
)
async def flaky(key: str) -> str:
    _failures[key] = _failures.get(key, 0) + 1
    if _failures[key] < 5:
        raise RuntimeError("not yet")
    return "ok"


@keel.workflow(name="bench.retrying")
async def retrying(key: str) -> str:
    return await flaky.aio(key)


def _env(backend: str, folder: Path) -> TestEnv:
    if backend == "memory":
        return TestEnv.memory()
    return TestEnv.sqlite(folder / f"skip-{time.monotonic_ns()}.db")


async def _case(case: str, backend: str, folder: Path) -> float:
    async with _env(backend, folder) as env:
        started = time.perf_counter()
        if case == "cron week":
            await env.client.schedule(nightly, cron="0 2 * * *", schedule_id="nightly")
            await env.sleep(days=7)
            runs = (await env.client.list(workflow="bench.nightly", limit=100)).runs
            assert len(runs) == 7 and all(r.state is keel.RunState.COMPLETED for r in runs)
        elif case == "sleep week":
            run = await env.client.start(week_sleep)
            assert await run.result(timeout=60) == "awake"
        else:
            run = await env.client.start(retrying, f"{backend}-{time.monotonic_ns()}")
            assert await run.result(timeout=60) == "ok"
        return time.perf_counter() - started


async def main(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"reps": args.reps, "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        out["raw_commits_per_s"] = raw_commit_rate(str(folder), "FULL", seconds=args.raw_seconds)
        for backend in ("memory", "sqlite"):
            for case in ("cron week", "sleep week", "retries"):
                await _case(case, backend, folder)  # warm-up, untimed
                times = [await _case(case, backend, folder) for _ in range(args.reps)]
                out["cases"][f"{backend}/{case}"] = {
                    "median_s": median(times),
                    "max_s": max(times),
                }
    return out


def _print(out: dict[str, Any]) -> None:
    print(f"raw SQLite commits/s (FULL, same directory): {out['raw_commits_per_s']:.0f}")
    print(f"{'case':<22} {'median s':>9} {'max s':>8}  (wall time, {out['reps']} reps)")
    for name, row in out["cases"].items():
        print(f"{name:<22} {row['median_s']:>9.3f} {row['max_s']:>8.3f}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--raw-seconds", type=float, default=0.75)
    p.add_argument("--json", action="store_true")
    ns = p.parse_args()
    result = asyncio.run(main(ns))
    print(json.dumps(result, indent=2)) if ns.json else _print(result)
