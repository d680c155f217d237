"""The PostgreSQL test harness waits out a server restart at setup and teardown."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest
from psycopg import errors

from keel.errors import StoreError
from tests import pg


def failing(times: int, error: Callable[[], BaseException]) -> Callable[[], str]:
    """A function that raises ``error()`` on its first ``times`` calls, then returns."""
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise error()
        return f"done after {len(calls)} calls"

    return fn


def wrapped_shutdown() -> BaseException:
    err = StoreError("PostgreSQL connection to 127.0.0.1:5432/x failed or was lost")
    err.__cause__ = psycopg.OperationalError(
        'connection failed: connection to server at "127.0.0.1", port 5432 failed: '
        "FATAL:  the database system is shutting down"
    )
    return err


@pytest.mark.parametrize(
    "error",
    [
        lambda: errors.CannotConnectNow("the database system is starting up"),
        lambda: psycopg.OperationalError(
            'connection failed: connection to server at "127.0.0.1", port 5432 failed: '
            "FATAL:  the database system is shutting down"
        ),
        lambda: psycopg.OperationalError(
            'connection failed: connection to server at "127.0.0.1", port 5432 failed: '
            "Connection refused\n\tIs the server running on that host and accepting TCP/IP "
            "connections?"
        ),
        lambda: errors.AdminShutdown("terminating connection due to administrator command"),
        wrapped_shutdown,  # a store's error wrapping one (the template's migration)
    ],
    ids=["starting-up", "shutting-down", "refused", "admin-shutdown", "wrapped"],
)
def test_restart_errors_are_retried_until_the_call_succeeds(
    error: Callable[[], BaseException],
) -> None:
    pauses: list[float] = []
    result = pg.retrying(failing(2, error), deadline=60, pause=pauses.append)
    assert result == "done after 3 calls"
    assert len(pauses) == 2


def test_other_errors_and_an_expired_deadline_raise_at_once() -> None:
    pauses: list[float] = []
    with pytest.raises(errors.InsufficientPrivilege):
        pg.retrying(
            failing(1, lambda: errors.InsufficientPrivilege("permission denied")),
            deadline=60,
            pause=pauses.append,
        )
    with pytest.raises(errors.CannotConnectNow):
        pg.retrying(
            failing(5, lambda: errors.CannotConnectNow("the database system is starting up")),
            deadline=0,
            pause=pauses.append,
        )
    refused = psycopg.OperationalError("connection failed: ... Connection refused")
    with pytest.raises(psycopg.OperationalError):  # the probe: no server is not a restart
        pg.retrying(failing(1, lambda: refused), deadline=60, refused=False, pause=pauses.append)
    assert pauses == []
