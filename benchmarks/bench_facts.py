"""Facts: bytes saved by storing equal large step results once, and the cost on small steps.

Two measurements, on SQLite (a fresh file per case, ``synchronous=FULL``) and
optionally PostgreSQL (a fresh database, created and dropped):

1. ``--runs`` runs whose one step returns the *same* ``--size`` value, with the
   default fact threshold (64 KiB) and with ``fact_threshold=None`` (every
   result kept in its journal row). Printed: the bytes of the journal (the
   events table's data) and of the facts table, and results per second.
2. ``--small`` runs of a three-step workflow with small results, both ways:
   steps per second (the threshold is one length test per event), and the cost
   of the sha256 every ``step_completed`` records, timed alone per call.

Beside the figures: the database's raw single-row commit rate, measured before
and after in the same run.

    .venv/bin/python benchmarks/bench_facts.py
    .venv/bin/python benchmarks/bench_facts.py --store both --runs 100 --size 1M
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import secrets
import sqlite3
import statistics
import sys
import time
import timeit
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import raw_commit_rate, scratch_db
from bench_large_values import label, parse_size
from bench_postgres import _admin, _db_url
from bench_postgres import raw_commit_rate as pg_raw_commit_rate
from psycopg import sql

import keel
from keel.core.facts import FACT_THRESHOLD
from keel.store.postgres import PostgresStore
from keel.store.sqlite import SQLiteStore

THRESHOLDS: dict[str, int | None] = {"facts": FACT_THRESHOLD, "no facts": None}


@keel.step(name="bench.facts.report")
def report(size: int) -> str:
    return "r" * size  # the same value in every run


@keel.workflow(name="bench.facts.large")
async def large(size: int) -> int:
    return len(await report(size))


@keel.step(name="bench.facts.add")
async def add(x: int) -> int:
    return x + 1


@keel.workflow(name="bench.facts.small")
async def small(x: int) -> int:
    return await add.aio(await add.aio(await add.aio(x)))


async def drive(store: Any, threshold: int | None, wf: Any, arg: int, n: int) -> float:
    """Seconds to run ``n`` runs of ``wf(arg)`` at once (the worker replays every turn)."""
    async with keel.Worker(store, cache=False, poll_interval=0.05, fact_threshold=threshold) as w:
        client = w.client()
        t0 = time.perf_counter()
        runs = [await client.start(wf, arg) for _ in range(n)]
        await asyncio.gather(*(r.result(timeout=600) for r in runs))
        return time.perf_counter() - t0


def sizes_sqlite(path: Path) -> tuple[int, int]:
    with sqlite3.connect(path) as conn:
        events = conn.execute("SELECT coalesce(sum(length(data)), 0) FROM events").fetchone()[0]
        facts = conn.execute("SELECT coalesce(sum(length(data)), 0) FROM facts").fetchone()[0]
    return int(events), int(facts)


def sizes_pg(url: str) -> tuple[int, int]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT (SELECT coalesce(sum(octet_length(data)), 0) FROM keel.events),"
            " (SELECT coalesce(sum(octet_length(data)), 0) FROM keel.facts)"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def bench_sqlite(args: argparse.Namespace) -> dict[str, Any]:
    raws = [raw_commit_rate(args.db_dir, "FULL")]
    cases = []
    for name, threshold in THRESHOLDS.items():
        with scratch_db(args.db_dir, "facts-large") as path:
            secs = asyncio.run(drive(SQLiteStore(path), threshold, large, args.size, args.runs))
            events, facts = sizes_sqlite(path)
        cases.append(case(name, args, secs, events, facts))
    # Small steps: the two cases alternate, ``--repeat`` times each (a shared
    # machine drifts); the median is printed.
    for _ in range(args.repeat):
        for c in cases:
            with scratch_db(args.db_dir, "facts-small") as path:
                store = SQLiteStore(path)
                secs = asyncio.run(drive(store, THRESHOLDS[c["case"]], small, 1, args.small))
            c["small_steps_per_s_each"].append(3 * args.small / secs)
    raws.append(raw_commit_rate(args.db_dir, "FULL"))
    return {"raw_commits_per_s": raws, "cases": cases}


def bench_postgres(args: argparse.Namespace) -> dict[str, Any]:
    db = f"keel_bench_facts_{os.getpid()}_{secrets.token_hex(2)}"
    url = _db_url(db)
    cases = []
    raws = []

    def fresh() -> None:
        _admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
        _admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))

    try:
        fresh()
        raws.append(pg_raw_commit_rate(url))
        for name, threshold in THRESHOLDS.items():
            fresh()
            secs = asyncio.run(drive(PostgresStore(url), threshold, large, args.size, args.runs))
            cases.append(case(name, args, secs, *sizes_pg(url)))
        for _ in range(args.repeat):  # alternating, as on SQLite
            for c in cases:
                fresh()
                store = PostgresStore(url)
                secs = asyncio.run(drive(store, THRESHOLDS[c["case"]], small, 1, args.small))
                c["small_steps_per_s_each"].append(3 * args.small / secs)
        raws.append(pg_raw_commit_rate(url))
    finally:
        _admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
    return {"raw_commits_per_s": raws, "cases": cases}


def case(
    name: str, args: argparse.Namespace, secs: float, events: int, facts: int
) -> dict[str, Any]:
    return {
        "case": name,
        "large_results_per_s": args.runs / secs,
        "journal_bytes": events,
        "facts_bytes": facts,
        "small_steps_per_s_each": [],
    }


def digest_cost_us() -> float:
    """Microseconds per sha256 of a small encoded result, as every step records it."""
    data = b'{"order":"A-1042","total":129.5}'
    n = 200_000
    return timeit.timeit(lambda: hashlib.sha256(data).hexdigest(), number=n) / n * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=("sqlite", "postgres", "both"), default="sqlite")
    parser.add_argument("--size", type=parse_size, default=parse_size("256K"))
    parser.add_argument("--runs", type=int, default=50, help="runs with the equal large value")
    parser.add_argument("--small", type=int, default=300, help="runs of the 3-step workflow")
    parser.add_argument("--repeat", type=int, default=3, help="small-step rounds per case")
    parser.add_argument("--db-dir", default=None, help="SQLite files here (default: a temp dir)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    result: dict[str, Any] = {"digest_us_per_step": digest_cost_us()}
    if args.store in ("sqlite", "both"):
        result["sqlite"] = bench_sqlite(args)
    if args.store in ("postgres", "both"):
        result["postgres"] = bench_postgres(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"sha256 of a small result (recorded by every step): {result['digest_us_per_step']:.2f} us"
    )
    for store in ("sqlite", "postgres"):
        if store not in result:
            continue
        raw = " / ".join(f"{r:,.0f}" for r in result[store]["raw_commits_per_s"])
        print(f"{store}: raw single-row commits/s (before / after): {raw}")
        for c in result[store]["cases"]:
            each = c["small_steps_per_s_each"]
            print(
                f"  {c['case']:>8}: {args.runs} runs x {label(args.size)} equal result: "
                f"journal {c['journal_bytes'] / 1e6:.2f} MB + facts "
                f"{c['facts_bytes'] / 1e6:.2f} MB, {c['large_results_per_s']:.1f} results/s"
                f" | small steps/s: median {statistics.median(each):.0f} "
                f"(of {', '.join(f'{x:.0f}' for x in each)})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
