"""A fence around unit tests: opening a database or starting a process fails the test.

Not a mock: nothing answers in the database's place. While the fence is
closed, a SQLite connection (any file, ``:memory:`` too), a PostgreSQL
connection (psycopg, sync or async, pooled or not) or a new process raises
:class:`FenceError`, and the attempt is recorded, so a test whose code under
test swallows the error still fails (see ``tests/unit/conftest.py``).

SQLite and processes are caught by an audit hook (:func:`sys.addaudithook`),
whatever name the code imported ``connect`` or ``Popen`` under; psycopg, which
connects in libpq where no audit event fires, by replacing its ``connect``
class methods while the fence is closed.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

# The PostgreSQL harness (tests/pg.py) clones and drops databases for other
# tests in threads of its own, which may be busy while a unit test runs.
HARNESS_THREADS = "keel-test-db"

_AUDIT_EVENTS = {
    "sqlite3.connect": "opened a SQLite database",
    "subprocess.Popen": "started a subprocess",
    "os.system": "ran a shell command",
    "os.posix_spawn": "spawned a process",
    "os.fork": "forked",
}


class FenceError(RuntimeError):
    """A fenced test tried to open a database or start a process."""


class Fence:
    """Closed around one test at a time; records every breach while closed."""

    def __init__(self) -> None:
        self._test: str | None = None
        self.breaches: list[str] = []
        self._hooked = False

    def _breach(self, what: str) -> None:
        if self._test is None or threading.current_thread().name.startswith(HARNESS_THREADS):
            return
        message = f"{self._test} {what}: unit tests are pure (tests/store, tests/integration)"
        self.breaches.append(message)
        raise FenceError(message)

    def _audit(self, event: str, args: tuple[Any, ...]) -> None:
        if self._test is not None and event in _AUDIT_EVENTS:
            self._breach(f"{_AUDIT_EVENTS[event]} ({event}{args!r:.80})")

    def _fenced(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def connect(*args: Any, **kwargs: Any) -> Any:
            self._breach("opened a PostgreSQL connection")
            return original(*args, **kwargs)  # a harness thread: let it through

        return connect

    @contextmanager
    def closed(self, test: str) -> Iterator[list[str]]:
        """Fence ``test`` in; yields the list its breaches are recorded in."""
        if not self._hooked:
            sys.addaudithook(self._audit)  # permanent: a closed fence is all it checks
            self._hooked = True
        restore: list[tuple[Any, str, Any]] = []
        try:
            import psycopg
        except ImportError:  # pragma: no cover - psycopg is a dev dependency
            pass
        else:
            for owner in (psycopg.Connection, psycopg.AsyncConnection):
                original = owner.__dict__["connect"]  # a classmethod; pools call cls.connect()
                restore.append((owner, "connect", original))
                owner.connect = classmethod(self._fenced(original.__func__))  # type: ignore[method-assign,assignment]
            restore.append((psycopg, "connect", psycopg.connect))
            psycopg.connect = self._fenced(psycopg.connect)
        self.breaches = []
        self._test = test
        try:
            yield self.breaches
        finally:
            self._test = None
            for owner, name, original in reversed(restore):
                setattr(owner, name, original)


FENCE = Fence()
