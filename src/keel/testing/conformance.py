"""The store conformance suite: the behaviour every Keel store backend must have.

Subclass :class:`StoreConformance` and provide a ``store_factory`` fixture that
returns a callable making a new, unopened store over an empty database::

    import pytest
    from keel.testing.conformance import StoreConformance

    class TestMyStore(StoreConformance):
        @pytest.fixture
        def store_factory(self, tmp_path):
            return lambda: MyStore(tmp_path / "keel.db")

The store is a :class:`keel.store.ports.Store`; each capability has its own
module of tests (``keel.testing.conformance_runs`` for ``store.runs``,
``conformance_mailbox`` for ``store.mailbox``, ``conformance_admin`` for the
operator actions of ``store.admin``, ``conformance_specs`` for ``store.specs``,
...), all composed here.
Tests are plain functions running their body with ``asyncio.run`` (no pytest
plugin needed). Times are always relative to ``await store.now()``.
"""

from __future__ import annotations

import pytest

from keel.testing.conformance_admin import AdminConformance
from keel.testing.conformance_bulk import BulkConformance
from keel.testing.conformance_cancel import CancelConformance
from keel.testing.conformance_changes import ChangeConformance
from keel.testing.conformance_children import ChildConformance
from keel.testing.conformance_continue import ContinueConformance
from keel.testing.conformance_facts import FactConformance
from keel.testing.conformance_helpers import (
    CANCELLED,
    SHORT_TTL,
    Body,
    ClockedStoreFactory,
    StoreFactory,
    child_run,
    claim_ids,
    event,
    expired_lease,
    finished,
    get,
    leased,
    new_run,
    run_with_store,
    started,
    suspended,
    wait_until_past,
)
from keel.testing.conformance_keys import IdempotencyConformance
from keel.testing.conformance_mailbox import SignalConformance
from keel.testing.conformance_queues import QueueLimitConformance
from keel.testing.conformance_reads import ReadConformance
from keel.testing.conformance_runs import RunConformance
from keel.testing.conformance_schedules import ScheduleConformance
from keel.testing.conformance_snapshots import SnapshotConformance
from keel.testing.conformance_specs import SpecConformance
from keel.testing.conformance_tasks import TaskConformance
from keel.testing.conformance_turns import TurnConformance
from keel.testing.conformance_workers import VersionConformance

__all__ = [
    "CANCELLED",
    "SHORT_TTL",
    "Body",
    "ClockedStoreFactory",
    "StoreConformance",
    "StoreFactory",
    "child_run",
    "claim_ids",
    "event",
    "expired_lease",
    "finished",
    "get",
    "leased",
    "new_run",
    "run_with_store",
    "started",
    "suspended",
    "wait_until_past",
]


class StoreConformance(
    RunConformance,
    TurnConformance,
    CancelConformance,
    ChildConformance,
    ContinueConformance,
    SnapshotConformance,
    SignalConformance,
    TaskConformance,
    QueueLimitConformance,
    IdempotencyConformance,
    FactConformance,
    ScheduleConformance,
    ReadConformance,
    ChangeConformance,
    VersionConformance,
    AdminConformance,
    SpecConformance,
    BulkConformance,
):
    """Behaviour shared by every backend; subclasses supply ``store_factory``."""

    @pytest.fixture
    def store_factory(self) -> StoreFactory:
        raise NotImplementedError("subclasses provide a store_factory fixture")

    @pytest.fixture
    def clocked_store_factory(self) -> ClockedStoreFactory | None:
        """Override if the backend accepts an injected clock (``None``: those tests skip)."""
        return None
