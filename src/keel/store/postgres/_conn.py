"""Connection settings, error mapping, a zero-round-trip liveness check, the clock offset."""

from __future__ import annotations

import math
import re
import select
import time
from typing import Any

import psycopg
from psycopg.adapt import AdaptersMap
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import ConnStatus
from psycopg.types.numeric import Int8BinaryDumper
from psycopg_pool import PoolTimeout

from keel.core.redact import redact
from keel.errors import ConfigurationError, DatabaseCorruptError, StoreError

_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

# Python ints always go out as bigint: psycopg would otherwise pick int2/int4/int8
# by value, and every new combination of types is another prepared statement.
ADAPTERS = AdaptersMap(psycopg.adapters)
ADAPTERS.register_dumper(int, Int8BinaryDumper)


def check_schema(schema: str) -> str:
    """A schema name that needs no quoting anywhere (it also goes into libpq options)."""
    if not isinstance(schema, str) or not _SCHEMA.match(schema):
        raise ConfigurationError(
            f"PostgreSQL schema must be a lowercase identifier ([a-z_][a-z0-9_]*, at most "
            f"63 characters), not {schema!r}"
        )
    return schema


def connection_params(
    url: str,
    *,
    schema: str,
    connect_timeout: float,
    application_name: str,
    statement_timeout: float,
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Connection keyword arguments for ``url`` (for the pool and other statements,
    and for schema work, which is not bounded by the statement timeout), and a
    password-free description of where it connects.

    Every connection works in Keel's schema (search_path, set at connect time
    so it costs no round trip), in autocommit mode (each write is one
    statement, hence one transaction) and prepares statements on first use.
    After ``statement_timeout`` seconds the server cancels any statement, lock
    waits included: a worker then never holds a run's row lock for longer than
    that without making progress. Migrations may rightly run longer.
    """
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error as exc:
        # libpq may quote the URL back, password included.
        raise ConfigurationError(f"invalid PostgreSQL URL: {redact(str(exc))}") from None
    settings = [str(params.get("options") or ""), f"-csearch_path={schema}"]
    admin_options = " ".join(filter(None, settings))
    timeout = f"-cstatement_timeout={max(1, math.ceil(statement_timeout * 1000))}"
    admin: dict[str, Any] = {
        "autocommit": True,
        "prepare_threshold": 0,
        "context": ADAPTERS,
        "connect_timeout": max(1, math.ceil(connect_timeout)),
        "application_name": application_name,
        "options": admin_options,
        # A peer that vanished without closing the socket is noticed within a minute.
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    dbname = params.get("dbname") or params.get("user")
    target = f"{host}:{port}/{dbname}" if dbname else f"{host}:{port}"
    return admin | {"options": f"{admin_options} {timeout}"}, admin, target


#: SQLSTATEs of damaged data or indexes (class XX): nothing a retry mends.
CORRUPTION = frozenset({"XX001", "XX002"})


def store_error(exc: BaseException, target: str) -> StoreError:
    """A psycopg (or pool) error as a :class:`StoreError` that says what happened
    (a :class:`DatabaseCorruptError` if the server reports damaged data)."""
    if isinstance(exc, psycopg.Error) and exc.sqlstate in CORRUPTION:
        msg = f"PostgreSQL database {target} is damaged ({exc.sqlstate}): {exc}; restore it"
        corrupt = DatabaseCorruptError(redact(msg).strip())
        corrupt.__cause__ = exc
        return corrupt
    if isinstance(exc, PoolTimeout):
        msg = f"no PostgreSQL connection to {target} became available in time ({exc})"
    elif isinstance(exc, psycopg.OperationalError):
        msg = f"PostgreSQL connection to {target} failed or was lost: {exc}"
    else:
        msg = f"PostgreSQL error on {target}: {type(exc).__name__}: {exc}"
    err = StoreError(redact(msg).strip())
    err.__cause__ = exc
    return err


class ErrorMapper:
    """``with``-block turning psycopg errors into :class:`StoreError` (Keel's pass through)."""

    __slots__ = ("_target",)

    def __init__(self, target: str) -> None:
        self._target = target

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, psycopg.Error):
            raise store_error(exc, self._target) from exc


def _readable(fd: int, timeout: float = 0.0) -> bool:
    if hasattr(select, "poll"):  # unlike select(), not limited to fds below 1024
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(int(timeout * 1000)))
    ready, _, _ = select.select([fd], [], [], timeout)
    return bool(ready)


#: How long to wait for the end of a connection that sent something while idle.
_EOF_GRACE = 0.1


def is_dead(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Whether an idle connection was closed by the server, with no round trip.

    An idle pooled connection has nothing to read unless the server sent
    something. After a backend is terminated (server restart,
    pg_terminate_backend) that is its FATAL message and then end-of-file,
    which may lag behind the message: reading them marks the connection bad,
    so the pool replaces it instead of failing a query. Only when something
    did arrive (rare: a parameter status is the benign case) is the
    end-of-file waited for, briefly.
    """
    pgconn = conn.pgconn
    try:
        got_input = False
        for _ in range(4):  # a notice or parameter status, then the socket is quiet
            if pgconn.status != ConnStatus.OK:
                break
            if not _readable(pgconn.socket, _EOF_GRACE if got_input else 0.0):
                break
            pgconn.consume_input()
            got_input = True
    except psycopg.Error:
        return True
    return pgconn.status != ConnStatus.OK


class ClockOffset:
    """The database clock as ``time.time() + offset``, kept up to date for free.

    A sample is a database clock reading made during a round trip that began
    at ``sent`` and ended at ``received`` (our clock), so the true offset lies
    in ``[db - received, db - sent]``. The estimate starts at 0 and moves only
    as far as a sample proves it wrong: with the server on this machine both
    clocks are one and it stays exactly 0; otherwise it ends within one round
    trip of the truth, and follows a clock that steps or drifts.
    """

    def __init__(self) -> None:
        self.offset = 0.0

    def observe(self, db_now: float, sent: float, received: float) -> None:
        low = db_now - received
        high = db_now - sent + 1e-6  # the database clock has microsecond resolution
        if self.offset < low:
            self.offset = low
        elif self.offset > high:
            self.offset = high

    def now(self) -> float:
        return time.time() + self.offset
