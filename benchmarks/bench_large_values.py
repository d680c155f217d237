"""Large step results on SQLite and PostgreSQL: throughput and the largest value that round-trips.

For each store and each value size (1 KB to 16 MB), an in-process worker runs
N one-step workflows at once; each step returns a string of that size and the
workflow, replayed from the journal (``cache=False``), checks it came back
whole. Printed per size: results per second, MB per second of step results,
and whether every run finished; per store, the largest size that did. A size
that fails or exceeds ``--deadline`` is reported and the run goes on.

Beside the figures: each store's raw single-row commit rate, measured before
and after in the same run (SQLite: a fresh file in ``--db-dir``; PostgreSQL:
a fresh database, created and dropped).

    .venv/bin/python benchmarks/bench_large_values.py
    .venv/bin/python benchmarks/bench_large_values.py --store postgres --sizes 1M,16M,64M --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import raw_commit_rate, scratch_db
from bench_postgres import _admin, _db_url
from bench_postgres import raw_commit_rate as pg_raw_commit_rate
from psycopg import sql

import keel
from keel.store.postgres import PostgresStore
from keel.store.sqlite import SQLiteStore

KB, MB = 1024, 1024 * 1024
DEFAULT_SIZES = "1K,16K,256K,1M,4M,16M"


@keel.step(name="bench.large_value")
def large_value(size: int, fill: str) -> str:
    return fill * size


@keel.workflow(name="bench.large_values")
async def large_values(size: int, fill: str) -> int:
    value = await large_value(size, fill)
    if value != fill * size:  # came back from the journal altered
        raise ValueError(f"value of {size} bytes did not round-trip")
    return len(value)


def parse_size(text: str) -> int:
    units = {"K": KB, "M": MB}
    text = text.strip().upper()
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def label(size: int) -> str:
    return f"{size // MB} MB" if size >= MB else f"{size // KB} KB"


async def one_size(store: Any, size: int, n: int, deadline: float) -> dict[str, Any]:
    worker = keel.Worker(store, cache=False, lease_ttl=30.0, poll_interval=0.05)
    t0 = time.perf_counter()
    try:
        async with worker:
            client = worker.client()
            runs = [await client.start(large_values, size, chr(97 + i % 26)) for i in range(n)]
            results = await asyncio.wait_for(
                asyncio.gather(*(r.result(timeout=deadline) for r in runs)), timeout=deadline
            )
        ok = results == [size] * n
        error = None if ok else "wrong results"
    except Exception as exc:  # a size that fails is a finding, not a crash of the benchmark
        ok, error = False, f"{type(exc).__name__}: {exc}"[:200]
    elapsed = time.perf_counter() - t0
    return {
        "size": size,
        "runs": n,
        "ok": ok,
        "error": error,
        "seconds": elapsed,
        "results_per_s": n / elapsed if ok else 0.0,
        "mb_per_s": n * size / MB / elapsed if ok else 0.0,
    }


def runs_for(size: int, budget: int) -> int:
    """Runs per size: ``budget`` bytes of results in all, between 4 and 64 runs."""
    return max(4, min(64, budget // size))


def bench_sqlite(args: argparse.Namespace, sizes: list[int]) -> dict[str, Any]:
    raws = [raw_commit_rate(args.db_dir, "FULL")]
    cases = []
    for size in sizes:
        with scratch_db(args.db_dir, f"large-{size}") as path:
            cases.append(
                asyncio.run(
                    one_size(
                        SQLiteStore(str(path)), size, runs_for(size, args.budget), args.deadline
                    )
                )
            )
    raws.append(raw_commit_rate(args.db_dir, "FULL"))
    return {"raw_commits_per_s": raws, "cases": cases}


def bench_postgres(args: argparse.Namespace, sizes: list[int]) -> dict[str, Any]:
    name = f"keel_bench_large_{os.getpid()}_{secrets.token_hex(2)}"
    _admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = _db_url(name)
    try:
        raws = [pg_raw_commit_rate(url)]
        cases = [
            asyncio.run(
                one_size(PostgresStore(url), size, runs_for(size, args.budget), args.deadline)
            )
            for size in sizes
        ]
        raws.append(pg_raw_commit_rate(url))
    finally:
        _admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    return {"raw_commits_per_s": raws, "cases": cases}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated, e.g. 1K,4M")
    parser.add_argument(
        "--budget", type=parse_size, default=64 * MB, help="bytes of results per size"
    )
    parser.add_argument("--deadline", type=float, default=120.0, help="seconds per size")
    parser.add_argument("--db-dir", default=None, help="SQLite files here (default: a temp dir)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    sizes = [parse_size(s) for s in args.sizes.split(",")]

    report: dict[str, Any] = {}
    if args.store in ("sqlite", "both"):
        report["sqlite"] = bench_sqlite(args, sizes)
    if args.store in ("postgres", "both"):
        report["postgres"] = bench_postgres(args, sizes)
    for result in report.values():
        passed = [c["size"] for c in result["cases"] if c["ok"]]
        result["largest_round_trip"] = max(passed, default=0)

    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for store, result in report.items():
        raw = " / ".join(f"{r:,.0f}" for r in result["raw_commits_per_s"])
        print(f"{store}: raw single-row commits/s (before / after): {raw}")
        for c in result["cases"]:
            line = f"  {label(c['size']):>6} x {c['runs']:>2} concurrent: "
            if c["ok"]:
                line += f"{c['results_per_s']:8.1f} results/s {c['mb_per_s']:8.1f} MB/s"
            else:
                line += f"FAILED after {c['seconds']:.1f} s: {c['error']}"
            print(line)
        print(f"  largest value that round-trips: {label(result['largest_round_trip'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
