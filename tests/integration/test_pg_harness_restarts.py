"""The PostgreSQL test harness (tests/pg.py) on a server that keeps restarting:
every statement it sends, on every path, waits the restart out."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import errors

from keel.errors import StoreError
from tests import pg
from tests.integration.test_pg_harness import failing
from tests.pg import postgres_server  # noqa: F401  (fixture)


def test_a_refused_connection_is_retried_for_the_grace_only() -> None:
    refused = psycopg.OperationalError("connection failed: ... Connection refused")
    pauses: list[float] = []
    result = pg.retrying(failing(2, lambda: refused), refused=60.0, pause=pauses.append)
    assert result == "done after 3 calls" and len(pauses) == 2
    with pytest.raises(psycopg.OperationalError):
        pg.retrying(failing(1, lambda: refused), refused=0.0, pause=pauses.append)
    assert len(pauses) == 2


# -- every path of a real session, on a server that fails each statement twice -------

RESTARTS: dict[str, Callable[[], BaseException]] = {
    "57P03-starting-up": lambda: errors.CannotConnectNow("the database system is starting up"),
    "57P03-shutting-down": lambda: errors.CannotConnectNow("the database system is shutting down"),
    "57P01-admin-shutdown": lambda: errors.AdminShutdown(
        "terminating connection due to administrator command"
    ),
    "refused": lambda: psycopg.OperationalError(
        'connection failed: connection to server at "127.0.0.1", port 5432 failed: '
        "Connection refused"
    ),
}


class Restarting:
    """``psycopg.connect`` behind a server that refuses the first two connections of
    every statement: in each thread, connections fail, fail, succeed, fail, fail, ...

    A harness path that did not retry would fail on its first connection."""

    def __init__(self, error: Callable[[], BaseException]) -> None:
        self.error = error
        self.calls = threading.local()
        self.lock = threading.Lock()
        self.failed = 0
        self.connected = 0

    def _turn(self) -> bool:
        """Whether this call in this thread fails (two of every three do)."""
        n = getattr(self.calls, "n", 0) + 1
        self.calls.n = n
        with self.lock:
            if n % 3:
                self.failed += 1
                return True
            self.connected += 1
            return False

    def connect(self, *args: Any, **kwargs: Any) -> psycopg.Connection[Any]:
        if self._turn():
            raise self.error()
        return psycopg.connect(*args, **kwargs)

    def migrate(self, url: str) -> None:
        if self._turn():
            err = StoreError("PostgreSQL connection failed or was lost")
            err.__cause__ = self.error()  # the store wraps the driver's error
            raise err
        pg._migrate(url)


def databases(prefix: str) -> set[str]:
    with psycopg.connect(pg.server_url(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", [f"{prefix}%"]
        ).fetchall()
    return {row[0] for row in rows}


def keel_tables(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'keel'"
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("error", RESTARTS.values(), ids=RESTARTS.keys())
def test_every_harness_path_waits_out_a_restart(
    error: Callable[[], BaseException],
    postgres_server: str,  # noqa: F811
) -> None:
    server = Restarting(error)
    pauses: list[float] = []
    session = pg.Session(connect=server.connect, migrate=server.migrate, pause=pauses.append)
    try:
        assert session.unavailable_reason() is None  # the probe
        fresh = session.fresh_database_url()  # the template (create, migrate, alter), a clone
        assert keel_tables(fresh) > 0
        empty = session.empty_database_url()
        assert keel_tables(empty) == 0
        session.drop_database(empty)
        assert pg.database_name(empty) not in databases(session.prefix)
        session.drop_database_later(fresh)
    finally:
        session.drop_all()  # the spares, what is left, the template

    assert databases(session.prefix) == set()
    assert session.created == set() and session.template is None
    # Every statement failed twice, then succeeded: none skipped the retry.
    assert server.connected > 0 and server.failed == 2 * server.connected
    assert len(pauses) == server.failed
