"""The PostgreSQL store: one database shared by many workers on many machines.

A composition: one :class:`~keel.store.postgres.database.PgDatabase` (the pool,
the group-commit writer, the listener, the clock) and one class per capability
over it.
"""

from __future__ import annotations

import math

from keel.errors import ConfigurationError
from keel.store import ports
from keel.store.postgres._conn import check_schema, connection_params
from keel.store.postgres._pool import Pool
from keel.store.postgres._schema import migration_script
from keel.store.postgres._sql import latest_version
from keel.store.postgres.admin import PgAdmin
from keel.store.postgres.changes import PgChanges
from keel.store.postgres.database import PgDatabase
from keel.store.postgres.facts import PgFacts
from keel.store.postgres.keys import PgKeys
from keel.store.postgres.mailbox import PgMailbox
from keel.store.postgres.reads import PgReads
from keel.store.postgres.runs import PgRuns
from keel.store.postgres.schedules import PgSchedules
from keel.store.postgres.specs import PgSpecs
from keel.store.postgres.tasks import PgTasks
from keel.store.postgres.workers import PgWorkers


class PostgresStore:
    """Keel store in a PostgreSQL database, in its own schema (default ``keel``).

    ``min_size``/``max_size`` bound the connection pool (one more connection
    LISTENs for wake-ups, and one runs writes that arrive alone). Migrations
    run on :meth:`open` unless ``auto_migrate=False`` (then use
    :meth:`migrate`, or :meth:`migration_sql` for a DBA). A connection attempt gives up after
    ``connect_timeout`` seconds and an operation waits at most ``pool_timeout``
    seconds for a free connection; either raises :class:`StoreError`.
    A statement that has not completed after ``statement_timeout`` seconds
    (waiting for a lock, or stuck sending a large value) fails with
    :class:`StoreError` and its transaction is rolled back, releasing its row
    locks; keep it at most the workers' ``lease_ttl`` (the default equals the
    default ``lease_ttl``) so a stuck worker's runs fall to another worker
    once their lease expires. Schema migrations are not bounded.
    The store belongs to the event loop that opened it.
    """

    #: The schema version this code creates and understands.
    LATEST_SCHEMA = latest_version()

    def __init__(
        self,
        url: str,
        *,
        schema: str = "keel",
        min_size: int = 1,
        max_size: int = 10,
        auto_migrate: bool = True,
        connect_timeout: float = 5.0,
        pool_timeout: float = 10.0,
        application_name: str = "keel",
        statement_timeout: float = 30.0,
    ) -> None:
        if not isinstance(url, str) or not url.strip():
            raise ConfigurationError(f"PostgreSQL URL must be a non-empty string, not {url!r}")
        if not 1 <= min_size <= max_size:
            raise ConfigurationError(
                f"need 1 <= min_size <= max_size, not min_size={min_size}, max_size={max_size}"
            )
        if not (connect_timeout > 0 and pool_timeout > 0):
            raise ConfigurationError("connect_timeout and pool_timeout must be positive")
        if isinstance(statement_timeout, bool) or not (
            isinstance(statement_timeout, int | float) and 0 < statement_timeout < math.inf
        ):
            raise ConfigurationError(
                f"statement_timeout must be a positive number of seconds, not {statement_timeout!r}"
            )
        kwargs, admin_kwargs, target = connection_params(
            url,
            schema=check_schema(schema),
            connect_timeout=connect_timeout,
            application_name=application_name,
            statement_timeout=statement_timeout,
        )
        self.db = PgDatabase(
            Pool(url, target, kwargs, admin_kwargs),
            schema=schema,
            statement_timeout=float(statement_timeout),
            sizes=(min_size, max_size),
            timeouts=(connect_timeout, pool_timeout),
        )
        self.url = url
        self.auto_migrate = auto_migrate
        # Typed as the ports: a Store's capability attributes are the protocols.
        self.runs: ports.RunJournal = PgRuns(self.db)
        self.mailbox: ports.Mailbox = PgMailbox(self.db)
        self.tasks: ports.TaskQueues = PgTasks(self.db)
        self.keys: ports.IdempotencyKeys = PgKeys(self.db)
        self.facts: ports.Facts = PgFacts(self.db)
        self.schedules: ports.Schedules = PgSchedules(self.db)
        self.reads: ports.OperatorReads = PgReads(self.db)
        self.changes: ports.ChangeFeed = PgChanges(self.db)
        self._workers = PgWorkers(self.db)
        self.workers: ports.WorkerRegistry = self._workers
        self.admin: ports.RunAdmin = PgAdmin(self.db)
        self.specs: ports.GraphSpecs = PgSpecs(self.db)

    def __repr__(self) -> str:
        return f"PostgresStore({self.db.target!r}, schema={self.schema!r})"

    @property
    def schema(self) -> str:
        return self.db.schema

    @property
    def channel(self) -> str:
        """The NOTIFY channel of every Keel write worth waking for."""
        return self.db.channel

    @property
    def statement_timeout(self) -> float:
        return self.db.statement_timeout

    async def open(self) -> None:
        """Connect, check (and migrate) the schema, start the pool and the listener. Idempotent."""
        await self.db.open(auto_migrate=self.auto_migrate)

    async def close(self) -> None:
        """Release the liveness locks this store handed out, stop the listener and
        close every connection. Idempotent."""
        await self._workers.release_locks()
        await self.db.close()

    async def now(self) -> float:
        # No round trip: the offset is refreshed by the claims and renewals that happen anyway.
        return self.db.clock.now()

    async def migrate(self) -> list[int]:
        """Apply pending migrations (the store need not be open); return the versions applied."""
        return await self.db.migrate()

    async def schema_version(self) -> int:
        """The database's Keel schema version (0: none yet); see also :attr:`LATEST_SCHEMA`."""
        return await self.db.schema_version()

    async def migration_sql(self, pending_only: bool = True) -> str:
        """The SQL of the pending (or all) migrations, for ``keel db migrate --print``."""
        version = await self.schema_version() if pending_only else 0
        return migration_script(self.schema, version)
