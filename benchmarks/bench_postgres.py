"""Keel on PostgreSQL: 3-step workflows per second and recovery, beside the raw commit rate.

One worker process (an in-process ``keel.Worker`` and its client, which hands
new runs to the worker already leased) runs N 3-step workflows (async steps
returning small ints):

* sequential: start one, wait for its result, start the next;
* concurrent: a window of C runs in flight.

Recovery: a child ``keel`` worker process claims 1,000 runs whose first step
blocks, is killed with SIGKILL, and a fresh worker finishes them all; the time
from the kill to the last completion is printed beside the lease TTL.

Beside the figures: the raw single-row ``INSERT`` + commit rate from Python
(psycopg, autocommit, one connection), measured before and after in the same
run on the same server. A fresh database is created and dropped.

    .venv/bin/python benchmarks/bench_postgres.py
    .venv/bin/python benchmarks/bench_postgres.py --n 2000 --concurrency 50 --json
    .venv/bin/python benchmarks/bench_postgres.py --mode concurrent --recover 0 --pool 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median, percentile

import keel
from keel.store.postgres import PostgresStore

SERVER = os.environ.get("KEEL_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BLOCK_ENV = "KEEL_BENCH_BLOCK"
HERE = str(Path(__file__).resolve().parent)


@keel.step(name="bench.pg.add")
async def add(x: int) -> int:
    return x + 1


@keel.workflow(name="bench.pg.three")
async def three(x: int) -> int:
    return await add(await add(await add(x)))


@keel.step(name="bench.pg.block")
async def block(x: int) -> int:
    if os.environ.get(BLOCK_ENV):
        await asyncio.sleep(3600)  # the worker holding this is about to be killed
    return x


@keel.workflow(name="bench.pg.recover")
async def recover(x: int) -> int:
    return await add(await block(x))


def _db_url(name: str) -> str:
    return urlunsplit(urlsplit(SERVER)._replace(path=f"/{name}"))


def _admin(statement: sql.Composable) -> None:
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(statement)


def server_settings(url: str) -> dict[str, str]:
    """The durability settings in force (Keel never changes them)."""
    settings = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for name in ("synchronous_commit", "fsync", "wal_sync_method"):
            row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
            settings[name] = "?" if row is None else str(row[0])
    return settings


def raw_commit_rate(url: str, n: int = 2000) -> float:
    """Single-row INSERT + commit per statement (autocommit), one connection."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS raw_probe (id bigserial PRIMARY KEY, v text)")
        t0 = time.perf_counter()
        for _ in range(n):
            conn.execute("INSERT INTO raw_probe (v) VALUES (%s)", ("x",))
        rate = n / (time.perf_counter() - t0)
        conn.execute("DROP TABLE raw_probe")
    return rate


async def _timed(client: keel.Client, x: int, latencies: list[float]) -> None:
    t0 = time.perf_counter()
    run = await client.start(three, x)
    assert await run.result(timeout=60) == x + 3
    latencies.append(time.perf_counter() - t0)


async def throughput(url: str, n: int, concurrency: int, pool: int) -> dict[str, float]:
    latencies: list[float] = []
    # Capacity as in bench_sqlite.py: every run is adopted locally, none is claimed.
    worker = keel.Worker(PostgresStore(url, max_size=pool), concurrency=max(100, concurrency))
    async with worker:
        client = worker.client()
        for i in range(20):  # warm-up: connections, prepared statements
            await _timed(client, i, [])
        t0 = time.perf_counter()
        if concurrency <= 1:
            for i in range(n):
                await _timed(client, i, latencies)
        else:
            next_x = iter(range(n))

            async def lane() -> None:
                for x in next_x:
                    await _timed(client, x, latencies)

            await asyncio.gather(*(lane() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return {
        "wf_per_s": n / elapsed,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
    }


async def recovery(url: str, runs: int, ttl: float) -> dict[str, float]:
    """Kill a worker holding ``runs`` runs; time until another has finished them all."""
    env = {**os.environ, BLOCK_ENV: "1", "PYTHONPATH": HERE}
    child = subprocess.Popen(  # noqa: ASYNC220 - started once, before anything is timed
        [
            sys.executable,
            "-m",
            "keel.cli",
            "worker",
            "bench_postgres",
            "--db",
            url,
            "--lease-ttl",
            str(ttl),
            "--concurrency",
            str(runs),
            "--log-level",
            "WARNING",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with keel.Client(PostgresStore(url)) as client:
            for i in range(runs):
                await client.start(recover, i)
            with psycopg.connect(url, autocommit=True) as conn:
                deadline = time.monotonic() + 120
                while True:
                    held = conn.execute(
                        "SELECT count(*) FROM keel.runs WHERE workflow = 'bench.pg.recover'"
                        " AND state = 'running' AND next_seq = 1"
                    ).fetchone()
                    if held is not None and held[0] >= runs:
                        break
                    if time.monotonic() > deadline or child.poll() is not None:
                        raise RuntimeError("the child worker never claimed every run")
                    await asyncio.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait()
        killed = time.perf_counter()
        worker = keel.Worker(PostgresStore(url), concurrency=runs, lease_ttl=ttl, poll_interval=0.2)
        async with worker:
            with psycopg.connect(url, autocommit=True) as conn:
                while True:
                    done = conn.execute(
                        "SELECT count(*) FROM keel.runs WHERE workflow = 'bench.pg.recover'"
                        " AND state = 'completed'"
                    ).fetchone()
                    if done is not None and done[0] >= runs:
                        break
                    await asyncio.sleep(0.05)
            recovered = time.perf_counter() - killed
    finally:
        if child.poll() is None:
            child.kill()
    return {"runs": runs, "lease_ttl_s": ttl, "recovery_s": recovered, "target_s": ttl + 5}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="workflows per case")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--reps", type=int, default=3, help="repetitions (medians printed)")
    parser.add_argument("--recover", type=int, default=1000, help="runs in the recovery case")
    parser.add_argument("--lease-ttl", type=float, default=5.0)
    parser.add_argument("--pool", type=int, default=10, help="PostgresStore max_size")
    parser.add_argument("--mode", choices=("sequential", "concurrent", "both"), default="both")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    name = f"keel_bench_{os.getpid()}_{secrets.token_hex(2)}"
    _admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = _db_url(name)
    report: dict[str, Any] = {"server": urlsplit(SERVER).netloc, "cases": {}}
    try:
        report["settings"] = server_settings(url)
        raws, seq, conc = [], [], []
        for _ in range(args.reps):
            raws.append(raw_commit_rate(url))
            if args.mode != "concurrent":
                seq.append(asyncio.run(throughput(url, args.n, 1, args.pool)))
            if args.mode != "sequential":
                conc.append(asyncio.run(throughput(url, args.n, args.concurrency, args.pool)))
            raws.append(raw_commit_rate(url))
        report["raw_commits_per_s"] = median(raws)
        for label, rows in (("sequential", seq), (f"concurrent C={args.concurrency}", conc)):
            if rows:
                report["cases"][label] = {k: median([r[k] for r in rows]) for k in rows[0]}
        if args.recover:
            report["recovery"] = asyncio.run(recovery(url, args.recover, args.lease_ttl))
    finally:
        _admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    raw = report["raw_commits_per_s"]
    print(
        f"PostgreSQL at {report['server']}: raw single-row INSERT+commit from Python "
        f"{raw:,.0f}/s (median of {len(raws)} probes, same run); "
        + ", ".join(f"{k}={v}" for k, v in report["settings"].items())
    )
    print(f"{'case':<18}{'wf/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'x raw/4':>9}")
    for label, row in report["cases"].items():
        print(
            f"{label:<18}{row['wf_per_s']:>8,.0f}{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}"
            f"{row['wf_per_s'] / (raw / 4):>9.2f}"
        )
    if "recovery" in report:
        rec = report["recovery"]
        print(
            f"recovery of {rec['runs']} runs after SIGKILL: {rec['recovery_s']:.2f} s "
            f"(lease TTL {rec['lease_ttl_s']:g} s; target TTL + 5 s = {rec['target_s']:g} s)"
        )
    print("x raw/4: workflows/s against raw commits/s / 4 (a 3-step workflow is 4 commits)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
