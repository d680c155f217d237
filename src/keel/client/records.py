"""What the client returns: run records, history events, pages, run handles."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from keel.core import codec
from keel.core.states import RunState
from keel.store.base import RunRecord

if TYPE_CHECKING:
    from keel.client.client import Client

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class RunInfo:
    """A run's state as the client reports it."""

    run_id: str
    workflow: str
    version: str
    state: RunState
    created_at: datetime
    updated_at: datetime
    wake_at: datetime | None
    cancel_requested: bool
    lease_owner: str | None
    error: dict[str, Any] | None
    parent_run_id: str | None = None  # a child run: the run that started it
    depth: int = 0  # how deep a child run is nested (0: started by a client)
    chain_id: str = ""  # continue-as-new: the first run's id, shared by the whole chain
    continued_to: str | None = None  # state ``continued``: the run that took over
    # Why no worker takes the run: "no worker has version ..." (see Client.waiting)
    waiting: str | None = None
    forked_from: str | None = None  # a retry or fork: the run whose journal it copied
    fork_seq: int | None = None  # ... up to (not including) this seq of that journal
    forks: tuple[str, ...] = ()  # the runs retried or forked from this one (Client.get only)

    @classmethod
    def from_record(cls, rec: RunRecord) -> RunInfo:
        return cls(
            run_id=rec.run_id,
            workflow=rec.workflow,
            version=rec.version,
            state=rec.state,
            created_at=utc_datetime(rec.created_at),
            updated_at=utc_datetime(rec.updated_at),
            wake_at=utc_datetime(rec.wake_at) if rec.wake_at is not None else None,
            cancel_requested=rec.cancel_requested,
            lease_owner=rec.lease_owner,
            error=codec.decode(rec.error) if rec.error else None,
            parent_run_id=rec.parent_run_id,
            depth=rec.depth,
            chain_id=rec.chain,
            continued_to=rec.continued_to,
            forked_from=rec.forked_from,
            fork_seq=rec.fork_seq,
        )


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    """One decoded journal event."""

    seq: int
    type: str
    command: str | None
    kind: str | None
    name: str | None
    data: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class RunList:
    """A page of runs; pass ``next_cursor`` back to get the next page."""

    runs: list[RunInfo]
    next_cursor: str | None


class RunHandle(Generic[R]):
    """A started run: its id and a way to wait for its result."""

    def __init__(self, client: Client, run_id: str, workflow: str, created: bool) -> None:
        self.client = client
        self.run_id = run_id
        self.workflow = workflow
        self.created = created  # False when the run id already existed

    async def result(self, timeout: float | None = None) -> R:
        """Wait for the run to finish; see :meth:`Client.result`."""
        value: R = await self.client.result(self.run_id, timeout=timeout)
        return value

    async def info(self) -> RunInfo:
        return await self.client.get(self.run_id)

    def __repr__(self) -> str:
        return f"<RunHandle {self.run_id} ({self.workflow})>"


def utc_datetime(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)
