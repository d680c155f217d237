"""Helpers shared by the benchmarks: the raw SQLite commit rate, commit counting, stats.

Nothing here changes Keel: commit counting wraps the SQLite store's connection
threads from the outside (see :class:`StoreCounters`), only inside a benchmark
process.
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SYNCHRONOUS = ("FULL", "NORMAL")


# --- statistics ---------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


# --- database files -----------------------------------------------------------------------
def db_files(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def remove_db(path: Path) -> None:
    for p in db_files(path):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


@contextlib.contextmanager
def scratch_db(db_dir: str | None, stem: str) -> Iterator[Path]:
    """A fresh database path in ``db_dir`` (default: a temp dir); removed afterwards."""
    if db_dir is None:
        with tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp:
            path = Path(tmp) / f"{stem}.db"
            try:
                yield path
            finally:
                remove_db(path)
        return
    folder = Path(db_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"keel-bench-{stem}-{os.getpid()}-{uuid.uuid4().hex[:8]}.db"
    try:
        yield path
    finally:
        remove_db(path)


# --- the physical limit -------------------------------------------------------------------
def raw_commit_rate(
    db_dir: str | None, synchronous: str, *, seconds: float = 0.75, warmup: int = 20
) -> float:
    """Single-row commits per second on a fresh file in ``db_dir``.

    The same settings Keel's writer uses: WAL, ``synchronous`` FULL or NORMAL,
    autocommit connection, each transaction ``BEGIN IMMEDIATE`` + one
    single-row INSERT + ``COMMIT``.
    """
    with scratch_db(db_dir, "raw") as path:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={synchronous}")
            conn.execute(
                "CREATE TABLE t (id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, data BLOB NOT NULL)"
            )
            payload = b'{"result":1,"args_hash":"0123456789abcdef","attempt":1}'
            begin, commit = "BEGIN IMMEDIATE", "COMMIT"
            insert = "INSERT INTO t (run_id, data) VALUES (?, ?)"
            row = ("00000000-0000-0000-0000-000000000000", payload)
            for _ in range(warmup):
                conn.execute(begin)
                conn.execute(insert, row)
                conn.execute(commit)
            n = 0
            start = time.perf_counter()
            deadline = start + seconds
            now = start
            while now < deadline:
                conn.execute(begin)
                conn.execute(insert, row)
                conn.execute(commit)
                n += 1
                now = time.perf_counter()
            return n / (now - start)
        finally:
            conn.close()


# --- counting Keel's transactions ---------------------------------------------------------
@dataclass
class Counts:
    """What the SQLite store's connection threads did."""

    write_txns: int = 0  # BEGIN IMMEDIATE ... COMMIT transactions (group commits)
    write_ops: int = 0  # store write operations (create_run, append_events, finish_run, ...)
    write_busy: float = 0.0  # seconds the writer thread spent inside transactions
    read_batches: int = 0
    read_ops: int = 0  # store read operations (get_run, claim candidates, ...)
    sql_commits: int = 0  # COMMIT statements seen by the trace callback (if enabled)
    batch_sizes: dict[int, int] = field(default_factory=dict)

    def minus(self, other: Counts) -> Counts:
        sizes = {
            k: v - other.batch_sizes.get(k, 0)
            for k, v in self.batch_sizes.items()
            if v - other.batch_sizes.get(k, 0)
        }
        return Counts(
            self.write_txns - other.write_txns,
            self.write_ops - other.write_ops,
            self.write_busy - other.write_busy,
            self.read_batches - other.read_batches,
            self.read_ops - other.read_ops,
            self.sql_commits - other.sql_commits,
            sizes,
        )

    def copy(self) -> Counts:
        return self.minus(Counts())


class StoreCounters:
    """Counts the SQLite store's transactions by wrapping its connection threads.

    ``DbThread._write`` runs one transaction per call (one COMMIT: the group
    commit of every write queued at that moment, or one write run inline on
    the event loop); ``DbThread._read`` serves one
    batch of reads. With ``trace_sql`` the writer connection also gets a
    ``set_trace_callback`` that counts the COMMIT statements SQLite executes,
    an independent check of the first count (costs a little).
    """

    def __init__(self, *, trace_sql: bool = False) -> None:
        self.counts = Counts()
        self._lock = threading.Lock()
        self._trace_sql = trace_sql
        self._undo: list[tuple[Any, str, Any]] = []

    def snapshot(self) -> Counts:
        with self._lock:
            return self.counts.copy()

    def __enter__(self) -> StoreCounters:
        from keel.store.sqlite import _schema, _threads

        counts, lock = self.counts, self._lock
        orig_write = _threads.DbThread._write
        orig_read = _threads.DbThread.__dict__["_read"]
        static_read = isinstance(orig_read, staticmethod)
        read_fn = orig_read.__func__ if static_read else orig_read

        def _write(self: Any, conn: sqlite3.Connection, batch: list[Any], **kw: Any) -> Any:
            # Results are delivered by the caller once this returns, so counting
            # here comes before any caller can look. A call that raises (an
            # inline write finding another process's write lock) ran nothing.
            t0 = time.perf_counter()
            outcomes = orig_write(self, conn, batch, **kw)
            dt = time.perf_counter() - t0
            with lock:
                counts.write_txns += 1
                counts.write_ops += len(batch)
                counts.batch_sizes[len(batch)] = counts.batch_sizes.get(len(batch), 0) + 1
                counts.write_busy += dt
            return outcomes

        def _read(*args: Any) -> Any:  # (conn, batch), or (self, conn, batch)
            with lock:  # counted first, like writes
                counts.read_batches += 1
                counts.read_ops += len(args[-1])
            return read_fn(*args)

        self._undo.append((_threads.DbThread, "_write", orig_write))
        self._undo.append((_threads.DbThread, "_read", orig_read))
        _threads.DbThread._write = _write  # type: ignore[method-assign]
        _threads.DbThread._read = staticmethod(_read) if static_read else _read  # type: ignore[method-assign]
        if self._trace_sql:
            orig_prepare = _schema.prepare_writer

            def prepare_writer(*args: Any, **kwargs: Any) -> sqlite3.Connection:
                conn = orig_prepare(*args, **kwargs)

                def trace(stmt: str) -> None:
                    if stmt == "COMMIT":
                        with lock:
                            counts.sql_commits += 1

                conn.set_trace_callback(trace)
                return conn

            self._undo.append((_schema, "prepare_writer", orig_prepare))
            _schema.prepare_writer = prepare_writer  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        while self._undo:
            owner, name, value = self._undo.pop()
            setattr(owner, name, value)


# --- store methods by capability ---------------------------------------------------------
def sqlite_store_methods(names: Sequence[str]) -> list[tuple[str, Any, str]]:
    """``(name, class, method)`` of each ``"capability.method"`` name of the SQLite store
    (``"runs.commit"``: the class of ``store.runs`` and ``"commit"``), found on a
    store that is never opened, so a benchmark can wrap the class's methods."""
    from keel.store.sqlite import SQLiteStore

    probe = SQLiteStore(Path(tempfile.gettempdir()) / f"keel-probe-{uuid.uuid4().hex}.db")
    found = []
    for name in names:
        capability, method = name.split(".")
        found.append((name, type(getattr(probe, capability)), method))
    return found
