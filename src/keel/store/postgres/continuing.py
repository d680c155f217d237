"""Continue-as-new in the PostgreSQL store (see :class:`ContinueMixin`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from keel.core.states import RunState
from keel.errors import RunExistsError, RunFinishedError, RunNotFoundError, StoreError
from keel.store.base import Lease, NewEvent, NewRun, RunRecord
from keel.store.postgres._writes import _Row


class ContinueMixin:
    """:class:`~keel.store.postgres.PostgresStore`'s continue-as-new switch, and the
    chain resolution that lets signals and cancel requests reach a chain's tip."""

    channel: str

    if TYPE_CHECKING:  # provided by PostgresStore and GroupCommitMixin

        async def _fetch(self, query: str, params: dict[str, Any]) -> list[_Row]: ...

        async def _transaction(
            self, statements: list[tuple[str, dict[str, Any]]]
        ) -> list[list[_Row]]: ...

        def _fence(
            self, lease: Lease, first_seq: int, events: Sequence[NewEvent]
        ) -> dict[str, Any]: ...

        @staticmethod
        def _journal_query(name: str, events: Sequence[NewEvent]) -> str: ...

        async def _fence_error(
            self, lease: Lease, first_seq: int, signal: int | None
        ) -> StoreError: ...

        async def get_run(self, run_id: str) -> RunRecord | None: ...

    async def continue_run(
        self,
        lease: Lease,
        first_seq: int,
        events: Sequence[NewEvent],
        successor: NewRun,
    ) -> None:
        params = self._fence(lease, first_seq, events) | {
            "successor": successor.run_id,
            "workflow": successor.workflow,
            "version": successor.version,
            "input": successor.input,
            "parent_run_id": successor.parent_run_id,
            "parent_close": successor.parent_close,
            "depth": successor.depth,
            "chain_id": successor.chain_id,
            "generation": successor.generation,
            "started_type": successor.started.type,
            "started_data": successor.started.data,
        }
        # Two statements, one transaction: the row lock first, so that the
        # switch's snapshot sees every signal committed before it (see lock_run).
        statements = [
            ("lock_run", {"run_id": lease.run_id}),
            (self._journal_query("continue_run", events), params),
        ]
        try:
            _, rows = await self._transaction(statements)
        except StoreError as exc:
            # A unique violation rolled everything back: the successor's id is taken.
            if await self.get_run(successor.run_id) is not None:
                raise RunExistsError([successor.run_id]) from exc
            raise
        if not rows:
            raise await self._fence_error(lease, first_seq, None)

    async def _chain_tip(self, run_id: str, action: str) -> str:
        """The live run a signal or cancel of ``run_id`` reaches (the run, or the tip
        of its continue-as-new chain); raises if there is none."""
        rows = await self._fetch("chain_tip", {"run_id": run_id})
        if not rows:
            raise RunNotFoundError(run_id)
        tip, state = rows[0]
        if RunState(state).is_terminal:
            raise RunFinishedError(tip, state, action)
        return str(tip)
