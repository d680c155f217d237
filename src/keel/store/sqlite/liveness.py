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
import os
import re
import sys
from pathlib import Path

if sys.platform != "win32":
    import fcntl

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


def hold(path: Path, owner: str) -> int | None:
    """An fd of ``owner``'s lock file ``path`` holding its flock (the file made if
    need be, ``owner`` written in it), or ``None`` if another open file holds it."""
    while True:
        fd = _take(path, create=True)
        if fd is None:
            return None
        if _same_file(fd, path):
            break
        os.close(fd)  # a cleaner deleted it between our open and our lock: again
    os.ftruncate(fd, 0)
    os.write(fd, owner.encode())  # for remove_unleased
    return fd


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


def claim_dead(path: Path) -> int | None:
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


def forget(path: Path, fd: int) -> None:
    """Delete a dead owner's file, then let its lock go."""
    try:
        path.unlink(missing_ok=True)
    finally:
        os.close(fd)


def remove_unleased(folder: Path, leased: set[str]) -> None:
    """Delete the files in ``folder`` of dead owners not in ``leased`` (each file
    holds its owner's name; those that hold a lease are left to the sweep that
    expires it); a few non-blocking opens, done inline."""
    for path in folder.glob("*.lock"):
        fd = claim_dead(path)
        if fd is None:
            continue
        if os.pread(fd, 4096, 0).decode(errors="replace") in leased:
            os.close(fd)
        else:
            forget(path, fd)
