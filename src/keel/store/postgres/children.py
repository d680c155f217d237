"""Child runs in the PostgreSQL store (see :class:`ChildrenMixin`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from keel.errors import RunExistsError, StoreError
from keel.store._checks import check_children
from keel.store.base import Lease, NewEvent, NewRun, RunRecord
from keel.store.postgres._writes import _Row


class ChildrenMixin:
    """:class:`~keel.store.postgres.PostgresStore`'s child runs: created with the
    parent's journal write (the cascade and wake-ups are in finish_run's SQL)."""

    if TYPE_CHECKING:  # provided by PostgresStore and GroupCommitMixin

        async def _write(self, query: str, params: dict[str, Any]) -> list[_Row]: ...

        def _fence(
            self, lease: Lease, first_seq: int, events: Sequence[NewEvent]
        ) -> dict[str, Any]: ...

        @staticmethod
        def _journal_query(name: str, events: Sequence[NewEvent]) -> str: ...

        async def _fence_error(
            self, lease: Lease, first_seq: int, signal: int | None
        ) -> StoreError: ...

        async def get_run(self, run_id: str) -> RunRecord | None: ...

    async def start_children(
        self,
        lease: Lease,
        first_seq: int,
        events: Sequence[NewEvent],
        children: Sequence[NewRun],
    ) -> None:
        check_children(children)
        params = self._fence(lease, first_seq, events) | {
            "child_ids": [c.run_id for c in children],
            "workflows": [c.workflow for c in children],
            "versions": [c.version for c in children],
            "inputs": [c.input for c in children],
            "parent_closes": [c.parent_close for c in children],
            "depths": [c.depth for c in children],
            "started_types": [c.started.type for c in children],
            "started_datas": [c.started.data for c in children],
        }
        try:
            rows = await self._write(self._journal_query("start_children", events), params)
        except StoreError as exc:
            # A unique violation rolled the statement back: say which ids are taken.
            taken = [c.run_id for c in children if await self.get_run(c.run_id) is not None]
            if taken:
                raise RunExistsError(taken) from exc
            raise
        if not rows:
            raise await self._fence_error(lease, first_seq, None)
