"""Graph runs beside code workflows, one process, side by side in one run.

Three measurements:

* **3 nodes vs 3 steps**: a graph of three sequential nodes against a code
  workflow of three steps (the same async bodies), N runs with C in flight, on
  SQLite and on PostgreSQL, alternating the two kinds ``--rounds`` times;
  medians. Target: the graph within 15 % of the code workflow's throughput.
* **a map of many items**: one graph run fanning out over ``--items`` items
  (SQLite): items per second and the worker's peak memory (tracemalloc).
* **bookkeeping per decision**: the interpreter's CPU per ready-set decision
  for graphs of growing size, without a store (the decision logic alone): it
  must not grow with the number of nodes already done.

Each store's raw single-row commit rate is measured in the same run and
printed beside its figures.

    .venv/bin/python benchmarks/bench_graph.py
    .venv/bin/python benchmarks/bench_graph.py --n 500 --items 10000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median, raw_commit_rate, scratch_db

import keel
from keel.graph import Graph
from keel.store.sqlite import SQLiteStore

PG_SERVER = os.environ.get("KEEL_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

# --- the same three bodies, as steps and as nodes -----------------------------------------


@keel.step(name="bg.a")
async def step_a(x: int) -> int:
    return x + 1


@keel.step(name="bg.b")
async def step_b(x: int) -> int:
    return x * 2


@keel.step(name="bg.c")
async def step_c(x: int) -> int:
    return x - 3


@keel.workflow(name="bg.code")
async def code(x: int) -> int:
    return await step_c(await step_b(await step_a(x)))


three = Graph("bg.graph")


@three.node
async def a(x: int) -> int:
    return x + 1


@three.node
async def b(a: int) -> int:
    return a * 2


@three.node
async def c(b: int) -> int:
    return b - 3


three_wf = three.build()

fan = Graph("bg.fan")


@fan.map("items", max_items=1_000_000)
async def square(item: int) -> int:
    return item * item


@fan.node
async def total(square: list[int]) -> int:
    return sum(square)


fan_wf = fan.build()


def expected(x: int) -> int:
    return (x + 1) * 2 - 3


# --- measurements -------------------------------------------------------------------------


async def throughput(store: Any, kind: str, n: int, window: int) -> float:
    """Runs per second of ``kind`` (``code`` or ``graph``), ``window`` in flight."""
    worker = keel.Worker(store, concurrency=max(100, window))
    async with worker:
        client = worker.client()

        async def one(x: int) -> None:
            if kind == "code":
                run = await client.start(code, x)
                assert await run.result(timeout=120) == expected(x)
            else:
                run = await client.start(three_wf, x=x)
                assert await run.result(timeout=120) == {"c": expected(x)}

        for i in range(10):  # warm-up
            await one(i)
        todo = iter(range(n))

        async def lane() -> None:
            for x in todo:
                await one(x)

        t0 = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(window)))
        return n / (time.perf_counter() - t0)


def side_by_side(make_store: Any, n: int, window: int, rounds: int) -> dict[str, float]:
    figures: dict[str, list[float]] = {"code": [], "graph": []}
    for _ in range(rounds):
        for kind in ("code", "graph"):
            figures[kind].append(asyncio.run(throughput(make_store(), kind, n, window)))
    code_rate, graph_rate = median(figures["code"]), median(figures["graph"])
    return {"code_wf_s": code_rate, "graph_wf_s": graph_rate, "ratio": graph_rate / code_rate}


async def big_map(store: Any, items: int) -> dict[str, float]:
    tracemalloc.start()
    worker = keel.Worker(store, concurrency=10)
    async with worker:
        client = worker.client()
        t0 = time.perf_counter()
        run = await client.start(fan_wf, items=list(range(items)))
        result = await run.result(timeout=3600)
        elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert result == {"total": sum(i * i for i in range(items))}
    return {"items_s": items / elapsed, "peak_mib": peak / 2**20}


def per_node_cpu(width: int) -> float:
    """CPU seconds per node of one run of a chain of ``width`` nodes (memory
    store, so the figure is the engine's: the worker plus the interpreter)."""
    from keel.store.memory import MemoryStore

    registry = keel.Registry()
    g = Graph(f"bg.chain{width}")
    for i in range(width):

        async def body() -> int:
            return 1

        g.node(name=f"n{i}", after=[f"n{i - 1}"] if i else [])(body)
    chain = g.build(registry=registry)

    async def once() -> float:
        async with keel.Worker(MemoryStore(), registry=registry) as worker:
            client = worker.client()
            t0 = time.process_time()
            run = await client.start(chain)
            assert await run.result(timeout=600) == {f"n{width - 1}": 1}
            return time.process_time() - t0

    return asyncio.run(once()) / width


def pg_url(name: str) -> str:
    import psycopg
    from psycopg import sql

    with psycopg.connect(PG_SERVER, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return PG_SERVER.rsplit("/", 1)[0] + f"/{name}"


def pg_raw_rate(url: str, n: int = 2000) -> float:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS raw_probe (id bigserial PRIMARY KEY, v text)")
        t0 = time.perf_counter()
        for _ in range(n):
            conn.execute("INSERT INTO raw_probe (v) VALUES (%s)", ("x",))
        rate = n / (time.perf_counter() - t0)
        conn.execute("DROP TABLE raw_probe")
    return rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300, help="runs per kind and round")
    parser.add_argument("--window", type=int, default=20, help="runs in flight")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--db-dir", default=None)
    args = parser.parse_args(argv)

    print(f"SQLite raw commits/s (FULL): {raw_commit_rate(args.db_dir, 'FULL'):,.0f}")
    with scratch_db(args.db_dir, "graph") as path:
        counter = iter(range(1_000_000))

        def sqlite_store() -> SQLiteStore:
            return SQLiteStore(path.with_name(f"{path.stem}-{next(counter)}.db"))

        row = side_by_side(sqlite_store, args.n, args.window, args.rounds)
        print(
            f"SQLite  3 steps {row['code_wf_s']:8,.0f} wf/s | 3 nodes {row['graph_wf_s']:8,.0f}"
            f" wf/s | graph/code {row['ratio']:.2f}"
        )
        fanned = asyncio.run(big_map(sqlite_store(), args.items))
        print(
            f"SQLite  map of {args.items:,} items: {fanned['items_s']:,.0f} items/s,"
            f" peak traced memory {fanned['peak_mib']:.1f} MiB"
        )
    print(f"SQLite raw commits/s (FULL), after: {raw_commit_rate(args.db_dir, 'FULL'):,.0f}")

    if not args.no_postgres:
        from keel.store.postgres import PostgresStore

        url = pg_url("keel_bench_graph")
        print(f"PostgreSQL raw commits/s: {pg_raw_rate(url):,.0f}")
        row = side_by_side(lambda: PostgresStore(url), args.n, args.window, args.rounds)
        print(
            f"Postgres 3 steps {row['code_wf_s']:7,.0f} wf/s | 3 nodes {row['graph_wf_s']:7,.0f}"
            f" wf/s | graph/code {row['ratio']:.2f}"
        )
        print(f"PostgreSQL raw commits/s, after: {pg_raw_rate(url):,.0f}")

    for width in (10, 100, 1000):
        cpu = per_node_cpu(width)
        print(f"CPU per node, one run of a chain of {width:>4} nodes: {cpu * 1e6:7.1f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
