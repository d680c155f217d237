"""Health of a Keel deployment as its store shows it: the checks behind
``keel health``, ``/healthz`` (liveness) and ``/readyz`` (readiness).

* **store**: the database answers a read (liveness is this check alone).
* **schema**: its Keel schema is the version this code knows.
* **workers**: at least one worker is alive (has registered its versions
  within a lease TTL).
* **overdue**: no runnable run has waited longer than ``overdue_after``
  seconds to be claimed (runs are being worked off).

Ready means every check passed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from keel.core.redact import redact
from keel.store.ports import Store

__all__ = [
    "DEFAULT_OVERDUE_AFTER",
    "Check",
    "HealthReport",
    "check",
    "liveness",
    "unreachable",
]

#: Seconds a due run may wait unclaimed before readiness fails.
DEFAULT_OVERDUE_AFTER = 300.0

#: Seconds one check may take before it counts as failed (a hung database).
DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Check:
    """One check: its name, whether it passed, and what was found."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class HealthReport:
    """The checks made; ``live``: the store answered; ``ready``: every check passed."""

    checks: tuple[Check, ...] = field(default_factory=tuple)

    @property
    def live(self) -> bool:
        return all(c.ok for c in self.checks if c.name == "store")

    @property
    def ready(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"live", "ready", "checks": [{"name", "ok", "detail"}]}``."""
        return {
            "live": self.live,
            "ready": self.ready,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
        }


@runtime_checkable
class _Versioned(Protocol):
    """A store with a schema version (SQLite and PostgreSQL; memory has none)."""

    LATEST_SCHEMA: int

    async def schema_version(self) -> int: ...


async def liveness(store: Store, *, timeout: float = DEFAULT_TIMEOUT) -> HealthReport:
    """The liveness check alone (``/healthz``): does the open ``store`` answer?"""
    return HealthReport((await _store_check(store, timeout),))


async def check(
    store: Store,
    *,
    overdue_after: float = DEFAULT_OVERDUE_AFTER,
    timeout: float = DEFAULT_TIMEOUT,
) -> HealthReport:
    """Every check (``/readyz``, ``keel health``) against the open ``store``.

    Never raises for an unwell store: a failed read is a failed check, with
    its error (passwords masked) as the detail.
    """
    reach = await _store_check(store, timeout)
    if not reach.ok:
        return HealthReport((reach,))
    checks = [reach]
    checks.append(await _guard("schema", _schema(store), timeout))
    checks.append(await _guard("workers", _workers(store), timeout))
    checks.append(await _guard("overdue", _overdue(store, overdue_after), timeout))
    return HealthReport(tuple(checks))


def unreachable(why: BaseException | str) -> HealthReport:
    """The report for a store that could not even be opened (``why``: the error)."""
    detail = redact(why) if isinstance(why, str) else _error(why)
    return HealthReport((Check("store", False, detail),))


async def _store_check(store: Store, timeout: float) -> Check:
    async def probe() -> Check:
        # A real round trip (the store clock alone may be local): one indexed row.
        await store.reads.get_run("keel:health-probe")
        return Check("store", True, "reachable")

    return await _guard("store", probe(), timeout)


async def _schema(store: Store) -> Check:
    if not isinstance(store, _Versioned):
        return Check("schema", True, "no schema (in-memory store)")
    version, latest = await store.schema_version(), store.LATEST_SCHEMA
    if version == latest:
        return Check("schema", True, f"version {version}")
    if version == 0:
        return Check("schema", False, "no Keel schema (run `keel db migrate`)")
    if version < latest:
        return Check("schema", False, f"version {version}, this Keel needs {latest}")
    return Check("schema", False, f"version {version} is newer than this Keel ({latest})")


async def _workers(store: Store) -> Check:
    live = {v.worker for v in await store.workers.list_versions(live=True)}
    if not live:
        return Check("workers", False, "no live worker")
    return Check("workers", True, f"{len(live)} live worker{'s' if len(live) != 1 else ''}")


async def _overdue(store: Store, overdue_after: float) -> Check:
    stats = await store.reads.run_stats()
    age = stats.oldest_due_age
    if stats.oldest_due_at is None:
        return Check("overdue", True, "no run is waiting to be claimed")
    detail = f"the oldest due run has waited {age:.1f}s (limit {overdue_after:g}s)"
    return Check("overdue", age <= overdue_after, detail)


async def _guard(name: str, probe: Any, timeout: float) -> Check:
    """Run one check's coroutine; an error or a timeout fails it."""
    try:
        result: Check = await asyncio.wait_for(probe, timeout)
    except TimeoutError:
        return Check(name, False, f"no answer within {timeout:g}s")
    except Exception as exc:
        return Check(name, False, _error(exc))
    return result


def _error(exc: BaseException) -> str:
    return redact(f"{type(exc).__name__}: {exc}")
