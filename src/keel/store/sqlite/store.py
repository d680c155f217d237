"""The SQLite store: an embedded Keel database that several processes on one machine share."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import keel.store.ports as ports
import keel.store.sqlite._schema as _schema
from keel.errors import ConfigurationError
from keel.store.sqlite._db import Database
from keel.store.sqlite._sql import latest_version
from keel.store.sqlite.admin import SQLiteAdmin
from keel.store.sqlite.changes import SQLiteChanges
from keel.store.sqlite.facts import SQLiteFacts
from keel.store.sqlite.keys import SQLiteKeys
from keel.store.sqlite.mailbox import SQLiteMailbox
from keel.store.sqlite.reads import SQLiteReads
from keel.store.sqlite.runs import SQLiteRuns
from keel.store.sqlite.schedules import SQLiteSchedules
from keel.store.sqlite.specs import SQLiteSpecs
from keel.store.sqlite.tasks import SQLiteTasks
from keel.store.sqlite.workers import SQLiteWorkers

_SYNCHRONOUS = ("FULL", "NORMAL")


class SQLiteStore:
    """Keel store on one SQLite file (WAL mode): a :class:`keel.store.ports.Store`.

    ``synchronous="FULL"`` (default) makes every commit survive power loss.
    ``"NORMAL"`` is faster; on power loss (not on a process crash) the last
    commits may be lost, but the database is never corrupted.
    ``busy_timeout`` is how long a write waits for another process's lock.
    ``poll_interval`` is how often waiters look for other processes' commits.
    ``clock`` is the store clock; replace it only in tests, since every process
    sharing the file must agree on it.

    Every capability holds :attr:`db`, the connection threads (see
    :class:`~keel.store.sqlite._db.Database`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        busy_timeout: float = 10.0,
        poll_interval: float = 0.015,
        clock: Callable[[], float] = time.time,
    ) -> None:
        sync = synchronous.upper()
        if sync not in _SYNCHRONOUS:
            raise ConfigurationError(f"synchronous must be 'FULL' or 'NORMAL', not {synchronous!r}")
        if busy_timeout <= 0 or poll_interval <= 0:
            raise ConfigurationError("busy_timeout and poll_interval must be positive")
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"  # an absolute path gives four slashes
        self.synchronous = sync
        self.db = Database(
            self.path,
            synchronous=sync,
            busy_timeout=busy_timeout,
            poll_interval=poll_interval,
            clock=clock,
            name=repr(self),
        )
        # Typed as the ports: a Store's capability attributes are the protocols.
        self.runs: ports.RunJournal = SQLiteRuns(self.db)
        self.mailbox: ports.Mailbox = SQLiteMailbox(self.db)
        self.tasks: ports.TaskQueues = SQLiteTasks(self.db)
        self.keys: ports.IdempotencyKeys = SQLiteKeys(self.db)
        self.facts: ports.Facts = SQLiteFacts(self.db)
        self.schedules: ports.Schedules = SQLiteSchedules(self.db)
        self.reads: ports.OperatorReads = SQLiteReads(self.db)
        self.changes: ports.ChangeFeed = SQLiteChanges(self.db)
        self._workers = SQLiteWorkers(self.db)
        self.workers: ports.WorkerRegistry = self._workers
        self.admin: ports.RunAdmin = SQLiteAdmin(self.db)
        self.specs: ports.GraphSpecs = SQLiteSpecs(self.db)

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r}, synchronous={self.synchronous!r})"

    async def open(self) -> None:
        """Check the file, migrate it and start the connection threads. Idempotent."""
        await self.db.open()

    async def close(self) -> None:
        """Finish queued writes, release the liveness locks this store handed out,
        close every connection and stop the threads. Idempotent."""
        await self._workers.release_locks()
        await self.db.close()

    async def now(self) -> float:
        # One machine shares this clock with every process using the file.
        return self.db.clock()

    #: The schema version this code creates and understands.
    LATEST_SCHEMA = latest_version()

    async def schema_version(self) -> int:
        """The file's Keel schema version as it is now (another process may have
        migrated it since this store opened); see also :attr:`LATEST_SCHEMA`."""
        return await self.db.read(lambda conn: _schema.schema_version(conn, self.path))
