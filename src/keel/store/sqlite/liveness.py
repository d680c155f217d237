"""Worker liveness on SQLite: an flock on a per-worker file beside the database.

Each worker holds an exclusive ``flock`` on ``<db>.workers/<owner>.<hash>.lock`` for
its whole life; the kernel drops it the instant the process dies. Another
worker probes the file of each owner of a live lease with a non-blocking
``flock``: if it gets the lock, that owner is dead, so its leases are expired
at once and the file is deleted. ``flock`` (not ``fcntl``/``lockf`` POSIX
locks) because its locks belong to the open file, not to the process: two
workers in one process each hold their own, and a probe from the same process
still conflicts. The files are opened close-on-exec, so a subprocess started
by a step does not keep a dead worker's lock alive (a bare ``fork`` without
``exec`` would).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from keel.store.sqlite import _sql
from keel.store.sqlite._threads import ChangeWaiters

if sys.platform != "win32":
    import fcntl

T = TypeVar("T")
Q = _sql.queries()
log = logging.getLogger("keel.store.sqlite")

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def lock_dir(db_path: Path) -> Path:
    """The folder of the liveness lock files of the database at ``db_path``."""
    return db_path.with_name(db_path.name + ".workers")


def lock_path(folder: Path, owner: str) -> Path:
    """``owner``'s lock file: a readable prefix of the name plus a hash of all of it."""
    digest = hashlib.blake2b(owner.encode(), digest_size=8).hexdigest()
    return folder / f"{_UNSAFE.sub('_', owner)[:80]}.{digest}.lock"


class FileLivenessLock:
    """An exclusive flock held on one open file until :meth:`release`."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    async def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        # Unlink before closing (which unlocks): a prober never sees the file unlocked.
        self.path.unlink(missing_ok=True)
        os.close(fd)


def _take(path: Path, *, create: bool) -> int | None:
    """An fd of ``path`` holding its exclusive flock, or ``None`` if another open
    file holds it (or, without ``create``, the file does not exist)."""
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    try:
        fd = os.open(path, flags, 0o644)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``fd`` is still the file at ``path`` (not one unlinked meanwhile)."""
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _claim_dead(path: Path) -> int | None:
    """If ``path``'s owner is gone (its file exists and nobody holds its lock),
    an fd holding that lock now; else ``None`` (alive, never took part, or
    another prober is handling it)."""
    fd = _take(path, create=False)
    if fd is None:
        return None
    if _same_file(fd, path):
        return fd
    os.close(fd)
    return None


def _forget(path: Path, fd: int) -> None:
    """Delete a dead owner's file, then let its lock go."""
    try:
        path.unlink(missing_ok=True)
    finally:
        os.close(fd)


def _remove_unleased(folder: Path, leased: set[str]) -> None:
    """Delete the files in ``folder`` of dead owners not in ``leased`` (each file
    holds its owner's name); a few non-blocking opens, done inline."""
    for path in folder.glob("*.lock"):
        fd = _claim_dead(path)
        if fd is None:
            continue
        if os.pread(fd, 4096, 0).decode(errors="replace") in leased:
            os.close(fd)
        else:
            _forget(path, fd)


class SQLiteLiveness:
    """The liveness methods of :class:`~keel.store.sqlite.store.SQLiteStore`
    (see :mod:`keel.store.liveness`)."""

    path: Path
    _clock: Callable[[], float]
    _waiters: ChangeWaiters

    if TYPE_CHECKING:  # defined by SQLiteStore

        async def _write(
            self,
            op: Callable[[sqlite3.Connection], T],
            *,
            notify: bool = False,
            work: bool = True,
        ) -> T: ...
        async def _read(self, op: Callable[[sqlite3.Connection], T]) -> T: ...

    async def hold_liveness(self, owner: str) -> FileLivenessLock | None:
        if sys.platform == "win32":  # no flock: leases expire by TTL alone
            return None
        folder = lock_dir(self.path)
        folder.mkdir(exist_ok=True)
        path = lock_path(folder, owner)
        while True:
            fd = _take(path, create=True)
            if fd is None:
                log.warning("liveness lock %s is held by another worker named %r", path, owner)
                return None
            if _same_file(fd, path):
                break
            os.close(fd)  # a cleaner deleted it between our open and our lock: again
        os.ftruncate(fd, 0)
        os.write(fd, owner.encode())  # for the stale-file cleanup below
        # The files of workers that died holding no lease are found by no sweep.
        await self.expire_dead_owners()
        await self._remove_stale_files(folder)
        return FileLivenessLock(path, fd)

    async def _remove_stale_files(self, folder: Path) -> None:
        """Delete the unlocked files of dead owners that hold no live lease (those
        that do are left to :meth:`expire_dead_owners`)."""

        def owners(conn: sqlite3.Connection) -> set[str]:
            rows = conn.execute(Q["leased_owners"], {"now": self._clock()}).fetchall()
            return {r[0] for r in rows if r[0] is not None}

        _remove_unleased(folder, await self._read(owners))

    async def expire_dead_owners(self) -> int:
        if sys.platform == "win32":
            return 0

        def owners(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(Q["leased_owners"], {"now": self._clock()}).fetchall()
            return [r[0] for r in rows if r[0] is not None]

        folder = lock_dir(self.path)
        dead: dict[str, tuple[Path, int]] = {}
        for owner in await self._read(owners):  # a few non-blocking opens per poll
            path = lock_path(folder, owner)
            fd = _claim_dead(path)
            if fd is not None:
                dead[owner] = (path, fd)
        if not dead:
            return 0

        def expire(conn: sqlite3.Connection) -> int:
            now = self._clock()
            return sum(
                conn.execute(Q["expire_owner_leases"], {"owner": o, "now": now}).rowcount
                for o in dead
            )

        try:
            expired: int = await self._write(expire, notify=True)
        except BaseException:
            for _path, fd in dead.values():  # keep the files: the next sweep retries
                os.close(fd)
            raise
        for path, fd in dead.values():  # expired: nothing is left to find them for
            _forget(path, fd)
        if expired:
            log.warning(
                "expired %d lease(s) of dead worker(s) %s", expired, ", ".join(sorted(dead))
            )
        return expired
