"""Opening a SQLite file safely: refuse foreign, damaged or too-new files, then migrate.

Checks run before anything is written (switching to WAL rewrites the file
header), and migration re-checks the version inside ``BEGIN IMMEDIATE`` so
several processes may open a new file at once.

Only SQLite opens the database file (and its ``-wal``/``-shm``), never Python's
file API: POSIX locks belong to a process and an inode, so closing *any*
descriptor of the file drops every lock the process holds on it, those of
SQLite connections of other stores in this process included. Without them,
another process closing its last connection checkpoints and deletes the WAL
under those stores ("disk I/O error", and writes nobody else sees). SQLite's
own connections share one lock table per file and keep a closed descriptor
until no lock on the file remains; ``stat`` opens nothing.
"""

from __future__ import annotations

import contextlib
import sqlite3
import stat
import time
from pathlib import Path

from keel.errors import DatabaseCorruptError, DatabaseError
from keel.store.sqlite._sql import FILES, latest_version, migrations, split_script

#: Files up to this size (with their WAL) get ``PRAGMA quick_check`` on open:
#: it reads every page, about 1 ms per MB from the page cache.
QUICK_CHECK_MAX_BYTES = 32 * 1024 * 1024
_CORRUPT = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def is_corruption(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite saying the file is damaged (or no database at all)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.Error) and code is not None and code & 0xFF in _CORRUPT


def corrupt_error(path: Path | None, detail: object) -> DatabaseCorruptError:
    """The one clear message for a damaged database file."""
    where = f"the SQLite database {path}" if path is not None else "the SQLite database"
    return DatabaseCorruptError(
        f"{where} is corrupted ({detail}); stop every process using it and restore it from a backup"
    )


def check_path(path: Path) -> None:
    """Refuse a directory or an unreadable path, by ``stat`` alone (see the module doc).

    Whether an existing file is SQLite at all is SQLite's to say, at the first
    read (:func:`schema_version`), before anything is written.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise DatabaseError(f"cannot read {path}: {exc}") from exc
    if stat.S_ISDIR(mode):
        raise DatabaseError(f"{path} is a directory, not a SQLite database file")


def connect(path: Path, busy_timeout: float, *, any_thread: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode: Keel issues BEGIN/COMMIT itself.

    ``any_thread``: usable from threads other than the one that made it (the
    caller serialises its use; see ``DbThread``'s inline writes).
    """
    try:
        return sqlite3.connect(
            path, timeout=busy_timeout, isolation_level=None, check_same_thread=not any_thread
        )
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot open SQLite database {path}: {exc}") from exc


def schema_version(conn: sqlite3.Connection, path: Path) -> int:
    """The Keel schema version of the file (0 if empty); raise if it is not ours."""
    try:
        rows = conn.execute(
            "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
        ).fetchall()
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_CORRUPT:
            raise corrupt_error(path, exc) from exc
        # SQLITE_NOTADB here: the first page is unreadable, foreign or damaged.
        raise DatabaseError(f"{path} is not a SQLite database or is corrupted: {exc}") from exc
    if not rows:
        return 0
    tables = sorted(name for kind, name in rows if kind == "table")
    if "keel_meta" not in tables:
        shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
        raise DatabaseError(
            f"{path} is not a Keel database (it holds other tables: {shown or 'none'}); "
            "refusing to modify it"
        )
    try:
        meta = dict(conn.execute("SELECT key, value FROM keel_meta").fetchall())
    except sqlite3.Error as exc:
        raise DatabaseError(f"{path} is not a Keel database (bad keel_meta: {exc})") from exc
    return FILES.checked_version(meta, str(path), "database")


def prepare_writer(path: Path, busy_timeout: float, synchronous: str) -> sqlite3.Connection:
    """Open the writer connection: check the file, set pragmas, apply migrations."""
    check_path(path)
    conn = connect(path, busy_timeout, any_thread=True)
    try:
        version = schema_version(conn, path)  # read-only: nothing written yet
        if version:
            check_intact(conn, path)
        _use_wal(conn, busy_timeout)
        conn.execute(f"PRAGMA synchronous={synchronous}")
        if version < latest_version():
            migrate(conn, path)
        conn.execute("PRAGMA foreign_keys=ON")  # after migrating: see migrate()
        # From here on the writer retries BEGIN IMMEDIATE itself (DbThread._begin).
        conn.execute("PRAGMA busy_timeout=0")
    except BaseException:
        conn.close()
        raise
    conn.row_factory = sqlite3.Row  # the store reads columns by name
    return conn


def check_intact(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a damaged file, if it is small enough to check all of it cheaply.

    In a larger one, damage is found when a store operation reads a damaged
    page: that operation raises :class:`DatabaseCorruptError`.
    """
    size = 0
    for part in (path, Path(f"{path}-wal")):
        with contextlib.suppress(OSError):  # no WAL: nothing to add
            size += part.stat().st_size
    if size > QUICK_CHECK_MAX_BYTES:
        return
    try:
        rows = conn.execute("PRAGMA quick_check(3)").fetchall()
    except sqlite3.DatabaseError as exc:
        if is_corruption(exc):  # not, say, a lock held too long by another process
            raise corrupt_error(path, exc) from exc
        raise
    problems = [line for (text,) in rows for line in str(text).splitlines()]
    if problems != ["ok"]:
        shown = "; ".join(p for p in problems if not p.startswith("***"))
        raise corrupt_error(path, f"quick_check: {shown}")


def _use_wal(conn: sqlite3.Connection, busy_timeout: float) -> None:
    """Switch the file to WAL (persistent; a no-op once done).

    The switch upgrades a shared lock, and SQLite answers BUSY at once instead
    of calling the busy handler (deadlock avoidance) when several processes
    open a new file together, so retry until ``busy_timeout``.
    """
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Apply the missing migrations in one transaction and record the new version.

    Foreign keys are off meanwhile (the pragma cannot change inside a
    transaction): migration 7 rebuilds the runs table, and dropping the old one
    must not cascade to the journal.
    """
    conn.execute("PRAGMA foreign_keys=OFF")
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = schema_version(conn, path)  # another process may have migrated meanwhile
        latest = latest_version()
        for number, script in migrations():
            if number > version:
                for statement in split_script(script):
                    conn.execute(statement)
        if version < latest:
            conn.execute(
                "INSERT INTO keel_meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(latest),),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def prepare_reader(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """A read-only connection (opened after the writer made the schema)."""
    conn = connect(path, busy_timeout)
    conn.execute("PRAGMA query_only=ON")
    conn.row_factory = sqlite3.Row
    return conn
