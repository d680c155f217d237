"""Replay of a long journal: core replay alone, and recovery from SQLite and PostgreSQL.

A workflow of 10,000 sequential steps has a 10,001-event journal (run_started,
then one step_completed per step). Three figures, medians of ``--reps``:

* core: ``Execution.start()`` over the journal in memory (the issue's target:
  replay of 10,000 events in at most 50 ms);
* sqlite / postgres: what a worker does to resume that run after a crash,
  ``load_events`` from the store, then the same replay.

Beside them, the raw single-row commit rate of each database, measured in the
same run (the rule for every benchmark here). Snapshots (issue 4) are not
built yet; when they are, this benchmark gains the "with a snapshot" column.

    .venv/bin/python benchmarks/bench_replay.py
    .venv/bin/python benchmarks/bench_replay.py --events 10000 --reps 7 --no-postgres
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import secrets
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median, raw_commit_rate, scratch_db

import keel
from keel.core import codec
from keel.core import journal as jr
from keel.core.events import EventType
from keel.core.journal import JournalEntry
from keel.core.replay import Execution
from keel.store.base import NewEvent, NewRun, Store
from keel.testing.replay import _NoLiveValues

TARGET_MS = 50.0


@keel.step(name="bench_replay.inc")
def inc(x: int) -> int:
    return x + 1


@keel.workflow(name="bench_replay.long", version="1")
async def long(n: int) -> int:
    value = 0
    for _ in range(n):
        value = await inc(value)
    return value


def journal_of(n: int) -> list[JournalEntry]:
    """The journal a live run of ``long(n)`` writes."""
    entries = [
        JournalEntry(0, EventType.RUN_STARTED, None, jr.envelope(input=jr.raw(f"[{n}]".encode())))
    ]
    for i in range(n):
        args_hash = codec.args_hash(codec.encode_args(inc.fn, (i,), {}, what="bench"))
        data = jr.envelope(result=jr.raw(str(i + 1).encode()), args_hash=args_hash, attempt=1)
        entries.append(JournalEntry(i + 1, EventType.STEP_COMPLETED, f"step:{inc.name}#{i}", data))
    return entries


def replay(n: int, journal: Sequence[JournalEntry]) -> float:
    """Seconds to replay ``journal`` to the workflow's end."""
    gc.collect()
    start = time.perf_counter()
    ex = Execution("bench", long.fn, (n,), {}, journal, _NoLiveValues(), workflow_name=long.name)
    ex.start()
    elapsed = time.perf_counter() - start
    assert ex.outcome is not None and ex.outcome.status == "completed", ex.outcome
    return elapsed


async def stored_run(store: Store, journal: list[JournalEntry]) -> str:
    """Write ``journal`` as a run's journal (in batches of 1,000 events)."""
    run_id = f"bench-{secrets.token_hex(4)}"
    started = NewEvent(journal[0].type.value, None, journal[0].data)
    new = NewRun(run_id, long.name, long.version, f"[{len(journal) - 1}]".encode(), started)
    _, lease, _ = await store.create_run(new, lease_owner="bench", lease_ttl=600)
    assert lease is not None
    seq = 1
    for i in range(1, len(journal), 1000):
        batch = [NewEvent(e.type.value, e.command, e.data) for e in journal[i : i + 1000]]
        await store.append_events(lease, seq, batch)
        seq += len(batch)
    return run_id


async def recovery(store: Store, n: int, journal: list[JournalEntry], reps: int) -> list[float]:
    """Seconds to load the run's journal from ``store`` and replay it, per rep."""
    await store.open()
    try:
        run_id = await stored_run(store, journal)
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            records = await store.load_events(run_id)
            entries = [JournalEntry(r.seq, EventType(r.type), r.command, r.data) for r in records]
            replay(n, entries)
            times.append(time.perf_counter() - start)
        return times
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000, help="step events in the journal")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    n = args.events
    journal = journal_of(n)
    out: dict[str, Any] = {"events": len(journal)}

    core = [replay(n, journal) for _ in range(args.reps)]
    out["core_ms"] = median(core) * 1000

    with scratch_db(None, "replay") as path:
        from keel.store.sqlite import SQLiteStore

        times = asyncio.run(recovery(SQLiteStore(path), n, journal, args.reps))
        out["sqlite_ms"] = median(times) * 1000
    out["sqlite_raw_commits_per_s"] = raw_commit_rate(None, "FULL")

    if not args.no_postgres:
        import bench_postgres as pgb
        from psycopg import sql

        from keel.store.postgres import PostgresStore

        name = f"keel_bench_replay_{secrets.token_hex(4)}"
        pgb._admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            url = pgb._db_url(name)
            out["postgres_raw_commits_per_s"] = pgb.raw_commit_rate(url)
            times = asyncio.run(recovery(PostgresStore(url), n, journal, args.reps))
            out["postgres_ms"] = median(times) * 1000
        finally:
            pgb._admin(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"journal: {out['events']:,} events; medians of {args.reps} reps")
    verdict = "ok" if out["core_ms"] <= TARGET_MS else "MISSED"
    target = f"target <= {TARGET_MS:.0f} ms: {verdict}"
    print(f"  core replay          {out['core_ms']:8.1f} ms   ({target})")
    print(
        f"  sqlite load+replay   {out['sqlite_ms']:8.1f} ms   "
        f"(raw commits {out['sqlite_raw_commits_per_s']:,.0f}/s)"
    )
    if "postgres_ms" in out:
        print(
            f"  postgres load+replay {out['postgres_ms']:8.1f} ms   "
            f"(raw commits {out['postgres_raw_commits_per_s']:,.0f}/s)"
        )
    print("  with a snapshot: not built yet (issue 4)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
