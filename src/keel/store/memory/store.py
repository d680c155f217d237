"""The in-memory store: its tables and one object per capability."""

from __future__ import annotations

import time
from collections.abc import Callable

from keel.store.memory.admin import MemoryAdmin
from keel.store.memory.changes import MemoryChanges
from keel.store.memory.facts import MemoryFacts
from keel.store.memory.keys import MemoryKeys
from keel.store.memory.mailbox import MemoryMailbox
from keel.store.memory.reads import MemoryReads
from keel.store.memory.runs import MemoryRuns
from keel.store.memory.schedules import MemorySchedules
from keel.store.memory.specs import MemorySpecs
from keel.store.memory.tables import Tables
from keel.store.memory.tasks import MemoryTasks
from keel.store.memory.workers import MemoryWorkers
from keel.store.ports import (
    ChangeFeed,
    Facts,
    GraphSpecs,
    IdempotencyKeys,
    Mailbox,
    OperatorReads,
    RunAdmin,
    RunJournal,
    Schedules,
    TaskQueues,
    WorkerRegistry,
)


class MemoryStore:
    """A store in Python dicts, with the same semantics as the database backends,
    for tests. ``clock`` is the store's clock (default ``time.time``)."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.url = "memory://"
        self._tables = tables = Tables(clock)
        # Typed as the ports: a Store's capability attributes are the protocols.
        self.runs: RunJournal = MemoryRuns(tables)
        self.mailbox: Mailbox = MemoryMailbox(tables)
        self.tasks: TaskQueues = MemoryTasks(tables)
        self.keys: IdempotencyKeys = MemoryKeys(tables)
        self.facts: Facts = MemoryFacts(tables)
        self.schedules: Schedules = MemorySchedules(tables)
        self.reads: OperatorReads = MemoryReads(tables)
        self.changes: ChangeFeed = MemoryChanges(tables)
        self.workers: WorkerRegistry = MemoryWorkers(tables)
        self.admin: RunAdmin = MemoryAdmin(tables)
        self.specs: GraphSpecs = MemorySpecs(tables)

    def __repr__(self) -> str:
        return repr(self._tables)

    async def open(self) -> None:
        self._tables.is_open = True

    async def close(self) -> None:
        # The data stays: reopening this object is like reopening a database file.
        self._tables.is_open = False
        self._tables.notify()

    async def now(self) -> float:
        return self._tables.clock()
