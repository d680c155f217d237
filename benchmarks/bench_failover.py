"""Failover: how long the runs of a SIGKILLed worker wait before another finishes them.

For each backend (SQLite file, fresh PostgreSQL database), with the DEFAULT
lease TTL (30 s) and poll interval (0.5 s), five rounds, medians:

* failover: a child ``keel worker`` process holds N runs (their first step
  blocks); a second worker (in this process) is running; the child is
  SIGKILLed; timed from the kill until all N runs are completed;
* work alone: the same N runs' work done by the same kind of running worker
  with nobody dead: N runs are created not yet due, then made due in one
  statement; timed from that statement until all N are completed.

The difference is what failover costs beyond the work: detecting the dead
worker (its liveness lock is gone), expiring its leases, claiming the runs.
Without liveness locks it would be the lease TTL. Beside the figures: the raw
single-row commit rate of the same database, measured in the same run.

    .venv/bin/python benchmarks/bench_failover.py
    .venv/bin/python benchmarks/bench_failover.py --runs 200 --backend sqlite --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median
from _common import raw_commit_rate as sqlite_raw_commit_rate
from bench_postgres import SERVER, _admin, _db_url
from bench_postgres import raw_commit_rate as pg_raw_commit_rate

import keel

BLOCK_ENV = "KEEL_BENCH_BLOCK"
HERE = str(Path(__file__).resolve().parent)
WORKFLOW = "bench.failover.flow"
TTL = 30.0  # the default lease TTL, said out loud
POLL = 0.5  # the default poll interval: how often a worker looks for dead ones
WORKER_CMD = [sys.executable, "-m", "keel.cli", "worker", "bench_failover"]


@keel.step(name="bench.failover.block")
async def block(x: int) -> int:
    if os.environ.get(BLOCK_ENV):
        await asyncio.sleep(3600)  # the worker holding this is about to be killed
    return x


@keel.step(name="bench.failover.add")
async def add(x: int) -> int:
    return x + 1


@keel.workflow(name=WORKFLOW)
async def flow(x: int) -> int:
    return await add(await block(x))


class Db:
    """One backend's database, on a connection of its own: counting runs, raw statements."""

    def __init__(self, url: str) -> None:
        self.pg = url.startswith("postgres")
        self.conn: Any = (
            psycopg.connect(url, autocommit=True, options="-csearch_path=keel")
            if self.pg
            else sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30, isolation_level=None)
        )

    def close(self) -> None:
        self.conn.close()

    def count(self, where: str) -> int:
        query = f"SELECT count(*) FROM runs WHERE workflow = '{WORKFLOW}' AND {where}"
        row = self.conn.execute(query).fetchone()
        return int(row[0])

    def execute(self, statement: str) -> None:
        self.conn.execute(statement)

    def make_due(self) -> None:
        """All parked runs due now, in one statement (and a wake-up on PostgreSQL)."""
        if self.pg:
            self.execute(
                "WITH due AS (UPDATE runs SET wake_at = 0 WHERE state = 'pending' RETURNING 1)"
                " SELECT pg_notify('keel.changes', 'created') FROM (SELECT 1 FROM due LIMIT 1) AS d"
            )
        else:
            self.execute("UPDATE runs SET wake_at = 0 WHERE state = 'pending'")


async def until(check: Callable[[], bool], what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def _with_worker(url: str, runs: int, body: Callable[[], Awaitable[float]]) -> float:
    async with keel.Worker(url, concurrency=runs, lease_ttl=TTL, poll_interval=POLL):
        return await body()


async def failover(url: str, runs: int) -> float:
    """Seconds from the SIGKILL of a worker holding ``runs`` runs until all completed."""
    child = subprocess.Popen(  # noqa: ASYNC220 - started once, before anything is timed
        [*WORKER_CMD, "--db", url, "--concurrency", str(runs), "--log-level", "WARNING"],
        env={**os.environ, BLOCK_ENV: "1", "PYTHONPATH": HERE},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    db = Db(url)
    try:
        async with keel.Client(url) as client:
            for i in range(runs):
                await client.start(flow, i)
        await until(lambda: db.count("state = 'running' AND next_seq = 1") >= runs, "the claims")

        async def body() -> float:
            # At a random point of the running worker's sweep cycle (one per poll
            # interval), as a real crash would be: detection takes 0 to 0.5 s of it.
            await asyncio.sleep(1.0 + random.uniform(0.0, POLL))
            child.send_signal(signal.SIGKILL)
            child.wait()
            killed = time.perf_counter()
            await until(lambda: db.count("state = 'completed'") >= runs, "the takeover")
            return time.perf_counter() - killed

        return await _with_worker(url, runs, body)
    finally:
        db.close()
        if child.poll() is None:
            child.kill()
            child.wait()


async def work_alone(url: str, runs: int) -> float:
    """Seconds for a running worker to finish ``runs`` runs made due at once."""
    async with keel.Client(url) as client:
        for i in range(runs):
            await client.start(flow, i, run_id=f"alone-{i}")
    db = Db(url)
    db.execute("UPDATE runs SET wake_at = 4102444800 WHERE state = 'pending'")  # parked

    async def body() -> float:
        await asyncio.sleep(1.0)  # let the worker settle into its idle wait
        t0 = time.perf_counter()
        db.make_due()
        await until(lambda: db.count("state = 'completed'") >= runs, "the work")
        return time.perf_counter() - t0

    try:
        return await _with_worker(url, runs, body)
    finally:
        db.close()


def measure(
    make_url: Callable[[], str], raw: Callable[[str], float], runs: int, reps: int
) -> dict[str, Any]:
    """``reps`` rounds of work alone and failover, each on fresh databases, raw
    probes around them; medians."""
    raws, alone, fail = [], [], []
    for _ in range(reps):
        url_a, url_b = make_url(), make_url()
        raws.append(raw(url_a))
        alone.append(asyncio.run(work_alone(url_a, runs)))
        fail.append(asyncio.run(failover(url_b, runs)))
        raws.append(raw(url_b))
    return {
        "runs": runs,
        "reps": reps,
        "lease_ttl_s": TTL,
        "raw_commits_per_s": median(raws),
        "failover_s": median(fail),
        "failover_max_s": max(fail),
        "work_alone_s": median(alone),
        "overhead_s": median([f - a for f, a in zip(fail, alone, strict=True)]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=5, help="rounds (medians printed)")
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {}

    if args.backend != "postgres":
        with tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp:
            made = iter(range(1000))

            def sqlite_url() -> str:
                return f"sqlite:///{tmp}/failover-{next(made)}.db"

            report["sqlite"] = measure(
                sqlite_url, lambda _url: sqlite_raw_commit_rate(tmp, "FULL"), args.runs, args.reps
            )
    if args.backend != "sqlite":
        names: list[str] = []

        def pg_url() -> str:
            names.append(f"keel_bench_{os.getpid()}_{secrets.token_hex(2)}")
            _admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(names[-1])))
            return _db_url(names[-1])

        try:
            report["postgres"] = measure(pg_url, pg_raw_commit_rate, args.runs, args.reps)
        finally:
            for name in names:
                _admin(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
        report["postgres"]["server"] = SERVER.rsplit("@", 1)[-1]

    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for backend, r in report.items():
        print(
            f"{backend}: {r['runs']} runs of a SIGKILLed worker finished {r['failover_s']:.2f} s "
            f"after the kill (worst of {r['reps']}: {r['failover_max_s']:.2f} s); the work "
            f"alone {r['work_alone_s']:.2f} s; failover cost {r['overhead_s']:.2f} s (lease "
            f"TTL {r['lease_ttl_s']:g} s, not waited for); raw single-row commits "
            f"{r['raw_commits_per_s']:,.0f}/s (median, same run)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
