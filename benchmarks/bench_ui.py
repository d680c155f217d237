"""The dashboard's runs page over 1,000,000 runs, on SQLite and on PostgreSQL.

Setup bulk-inserts the rows straight into a fresh database (``executemany`` on
SQLite, ``COPY`` on PostgreSQL; nothing journaled: the runs page reads only
the runs table). States are spread as a busy system's are (90 % completed, 5 %
failed, 2 % suspended, 1 % running, 1 % pending, 1 % cancelled) over 20
workflows, one run per 10 ms.

Then ``keel.ui.create_app`` is served by uvicorn on a local port and the runs
page (its first 50 rows) is fetched over HTTP for several views: unfiltered,
one workflow, one state, a rare state, a state no run is in, oldest first, page
200 (by its cursor) and a time range; each sort of the column headers (end
time, workflow, state; both directions, page 50 of each by its cursor, and with
a state filter); and the counts per state, which the page loads with a request
of their own. Printed per view: the median and p95 over the repetitions. Next
to them, the raw probes: the same first page as one hand-written SQL
statement on the same database, and the counts per state as one ``GROUP BY``,
timed on a plain connection: the floor for the page; and the database's raw
single-row commit rate, measured in the same run.

    .venv/bin/python benchmarks/bench_ui.py                      # both backends, 1,000,000 runs
    .venv/bin/python benchmarks/bench_ui.py --runs 200000 --backend sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import uvicorn
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import raw_commit_rate

from keel.store.postgres import PostgresStore
from keel.store.sqlite import SQLiteStore
from keel.ui import create_app

SERVER = os.environ.get("KEEL_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
STATES = [("completed", 90), ("failed", 5), ("suspended", 2), ("running", 1), ("pending", 1),
          ("cancelled", 1)]  # fmt: skip
WORKFLOWS = [f"bench.flow{i:02d}" for i in range(20)]
T0 = 1_700_000_000.0
STEP = 0.01  # seconds between runs


def rows(n: int) -> Iterator[tuple[Any, ...]]:
    """``(run_id, workflow, version, state, created_at, updated_at, wake_at)`` of n runs."""
    rng = random.Random(7)
    states = [s for s, weight in STATES for _ in range(weight)]
    for i in range(n):
        created = T0 + i * STEP
        state = rng.choice(states)
        wake = created if state in ("pending", "suspended") else None
        yield (f"run-{i:08d}", WORKFLOWS[i % 20], "v1", state, created, created + 1.5, wake)


# --- setup -----------------------------------------------------------------------------------


def fill_sqlite(path: Path, n: int) -> None:
    async def create() -> None:
        store = SQLiteStore(path)
        await store.open()
        await store.close()

    asyncio.run(create())
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    with conn:
        conn.executemany(
            "INSERT INTO runs (run_id, workflow, version, state, created_at, updated_at, wake_at,"
            " input) VALUES (?, ?, ?, ?, ?, ?, ?, X'5B5D')",
            rows(n),
        )
    conn.execute("ANALYZE")
    conn.close()


def fill_postgres(url: str, n: int) -> None:
    async def create() -> None:
        store = PostgresStore(url)
        await store.open()
        await store.close()

    asyncio.run(create())
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET search_path TO keel")
        with conn.cursor() as cur:
            with cur.copy(
                "COPY runs (run_id, workflow, version, state, created_at, updated_at, wake_at)"
                " FROM STDIN"
            ) as copy:
                for row in rows(n):
                    copy.write_row(row)
            with cur.copy("COPY run_payloads (run_id, input) FROM STDIN") as copy:
                for i in range(n):
                    copy.write_row((f"run-{i:08d}", b"[]"))
        conn.execute("VACUUM ANALYZE runs")
        conn.execute("VACUUM ANALYZE run_payloads")


# --- the raw probe -----------------------------------------------------------------------------

RAW_PAGE = (
    "SELECT * FROM runs ORDER BY created_at DESC, run_id DESC LIMIT 51",
    "SELECT state, count(*) FROM runs GROUP BY state",
)


def raw_sqlite(path: Path, reps: int) -> dict[str, float]:
    conn = sqlite3.connect(path)
    out = {}
    for name, query in zip(("page", "counts"), RAW_PAGE, strict=True):
        out[name] = timed(lambda q=query: conn.execute(q).fetchall(), reps)[0]
    conn.close()
    return out


def raw_postgres(url: str, reps: int) -> dict[str, float]:
    out = {}
    with psycopg.connect(url, autocommit=True) as conn:
        # The raw commit probe: single-row INSERT + COMMIT from Python, as bench_postgres.
        conn.execute("CREATE TEMP TABLE probe (id bigserial PRIMARY KEY, data bytea)")
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < 0.75:
            conn.execute("INSERT INTO probe (data) VALUES ('\\x00')")
            n += 1
        out["commits"] = n / (time.perf_counter() - start)
        conn.execute("SET search_path TO keel")
        page = (
            "SELECT r.*, p.input, p.result, p.error FROM runs r JOIN run_payloads p USING (run_id)"
            " ORDER BY r.created_at DESC, r.run_id DESC LIMIT 51"
        )
        for name, query in (("page", page), ("counts", RAW_PAGE[1])):
            out[name] = timed(lambda q=query: conn.execute(q).fetchall(), reps)[0]
    return out


# --- the page ----------------------------------------------------------------------------------


def timed(fn: Callable[[], object], reps: int) -> tuple[float, float]:
    """Median and p95 of ``fn``'s wall time in ms, after one warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.95))]


def serve(url: str) -> tuple[uvicorn.Server, threading.Thread, str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(url), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    return server, thread, f"http://127.0.0.1:{port}"


def deep(http: httpx.Client, query: str, pages: int) -> str:
    """The URL path of page ``pages`` of the view ``query``, reached by following "next"."""
    path = "/?" + query
    for _ in range(pages - 1):
        html = http.get(path).text
        marker = html.split('rel="next" href="', 1)
        if len(marker) == 1:
            break
        path = marker[1].split('"', 1)[0].replace("&amp;", "&")
    return path


def views(http: httpx.Client, n: int) -> dict[str, str]:
    """The runs page's views, by name: URL paths."""
    middle = T0 + n * STEP / 2
    return {
        "all runs": "/",
        "one workflow": "/?workflow=bench.flow07",
        "state=failed": "/?state=failed",
        "state=pending (1 %)": "/?state=pending",
        "oldest first": "/?order=oldest",
        "page 200": deep(http, "", 200),
        "1 hour range": f"/?since={iso(middle)}&until={iso(middle + 3600)}",
        "workflow+state": "/?workflow=bench.flow03&state=suspended",
        "state=continued (none)": "/?state=continued",
        "sort=ended": "/?sort=ended",
        "sort=ended asc": "/?sort=ended&order=asc",
        "sort=ended page 50": deep(http, "sort=ended", 50),
        "sort=ended state=failed": "/?sort=ended&state=failed",
        "sort=ended state=running": "/?sort=ended&state=running",
        "sort=workflow": "/?sort=workflow",
        "sort=workflow asc": "/?sort=workflow&order=asc",
        "sort=workflow page 50": deep(http, "sort=workflow&order=asc", 50),
        "sort=workflow state=pend.": "/?sort=workflow&state=pending",
        "sort=state": "/?sort=state",
        "sort=state asc": "/?sort=state&order=asc",
        "sort=state page 50": deep(http, "sort=state", 50),
        "counts (own request)": "/runs/counts",
        "counts, one workflow": "/runs/counts?workflow=bench.flow07",
    }


def iso(epoch: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def measure(url: str, n: int, reps: int) -> dict[str, tuple[float, float]]:
    server, thread, base = serve(url)
    try:
        with httpx.Client(base_url=base, timeout=60) as http:
            out = {}
            for name, path in views(http, n).items():
                response = http.get(path)
                assert response.status_code == 200, (name, response.status_code)
                out[name] = timed(lambda p=path: http.get(p).raise_for_status(), reps)
            return out
    finally:
        server.should_exit = True
        thread.join(10)


def report(
    backend: str, n: int, raw: dict[str, float], pages: dict[str, tuple[float, float]]
) -> None:
    print(
        f"\n{backend}: runs page over {n:,} runs (HTTP, 50 rows; the counts are their own request)"
    )
    print(f"  raw probes: first page as one SELECT {raw['page']:.1f} ms, counts per state as"
          f" one GROUP BY {raw['counts']:.1f} ms,"
          f" single-row commits {raw['commits']:,.0f}/s")  # fmt: skip
    for name, (p50, p95) in pages.items():
        flag = "" if p95 < 200 else "   <-- over 200 ms"
        print(f"  {name:<26} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms{flag}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args()
    if args.backend in ("sqlite", "both"):
        with tempfile.TemporaryDirectory(prefix="keel-bench-ui-") as tmp:
            path = Path(tmp) / "ui.db"
            start = time.perf_counter()
            fill_sqlite(path, args.runs)
            print(f"sqlite: {args.runs:,} runs inserted in {time.perf_counter() - start:.1f} s")
            raw = raw_sqlite(path, args.reps)
            raw["commits"] = raw_commit_rate(tmp, "FULL")  # Keel's default synchronous
            report("SQLite", args.runs, raw, measure(str(path), args.runs, args.reps))
    if args.backend in ("postgres", "both"):
        name = f"keel_bench_ui_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(SERVER, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        url = SERVER.rsplit("/", 1)[0] + "/" + name
        try:
            start = time.perf_counter()
            fill_postgres(url, args.runs)
            print(f"postgres: {args.runs:,} runs inserted in {time.perf_counter() - start:.1f} s")
            raw = raw_postgres(url, args.reps)
            report("PostgreSQL", args.runs, raw, measure(url, args.runs, args.reps))
        finally:
            with psycopg.connect(SERVER, autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
