"""Journal snapshots in the PostgreSQL store (see :class:`SnapshotsMixin`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keel.errors import LeaseLostError, StoreError
from keel.store._checks import check_snapshot
from keel.store.base import Lease, NewSnapshot, SnapshotRecord
from keel.store.postgres._writes import _Row


class SnapshotsMixin:
    """:class:`~keel.store.postgres.PostgresStore`'s journal snapshots: the latest
    per run, in their own table (a snapshot write leaves the hot runs row alone)."""

    if TYPE_CHECKING:  # provided by PostgresStore and GroupCommitMixin

        async def _write(self, query: str, params: dict[str, Any]) -> list[_Row]: ...

        async def _fetch(self, query: str, params: dict[str, Any]) -> list[_Row]: ...

        async def _fence_error(
            self, lease: Lease, first_seq: int, signal: int | None
        ) -> StoreError: ...

    async def save_snapshot(self, lease: Lease, snapshot: NewSnapshot) -> None:
        params = {
            "run_id": lease.run_id,
            "token": lease.token,
            "owner": lease.owner,
            "upto_seq": snapshot.upto_seq,
            "version": snapshot.version,
            "format": snapshot.format,
            "data": snapshot.data,
        }
        rows = await self._write("save_snapshot", params)
        if not rows:
            error = await self._fence_error(lease, -1, None)
            if isinstance(error, LeaseLostError):
                raise error
            raise StoreError(f"fenced write to run {lease.run_id!r} matched no row; retry it")
        check_snapshot(snapshot, int(rows[0][0]))  # the INSERT had the same condition

    async def load_snapshot(self, run_id: str) -> SnapshotRecord | None:
        rows = await self._fetch("load_snapshot", {"run_id": run_id})
        if not rows:
            return None
        run_id_, upto_seq, version, format_, data, created_at = rows[0]
        return SnapshotRecord(run_id_, upto_seq, version, format_, bytes(data), created_at)
