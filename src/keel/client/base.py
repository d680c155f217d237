"""The client's connection to its store, which every group of methods shares."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from keel.core import names
from keel.errors import RunNotFoundError
from keel.local import LocalWorker
from keel.store import open_store
from keel.store.base import RunRecord
from keel.store.ports import Store
from keel.workflow.registry import Registry, default_registry

if TYPE_CHECKING:
    from keel.client.client import Client


class ClientBase:
    """The store, registry and in-process worker a :class:`~keel.client.Client` works with."""

    def __init__(
        self,
        store: Store | str,
        *,
        registry: Registry | None = None,
        worker: LocalWorker | None = None,
    ) -> None:
        self.store: Store = open_store(store) if isinstance(store, str) else store
        self.registry = registry or default_registry
        self.worker = worker
        self._opened = False

    async def open(self) -> None:
        if not self._opened:
            await self.store.open()
            self._opened = True

    async def close(self) -> None:
        if self._opened and self.worker is None:
            await self.store.close()
        self._opened = False

    @property
    def _client(self) -> Client:
        """This object as the whole client: a group of methods that calls one of
        another group (a :class:`RunHandle` needs ``result``) goes through it."""
        return cast("Client", self)

    async def __aenter__(self) -> Client:
        await self.open()
        return self._client

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _record(self, run_id: str) -> RunRecord:
        names.text(run_id, "run_id")
        await self.open()
        rec = await self.store.reads.get_run(run_id)
        if rec is None:
            raise RunNotFoundError(run_id)
        return rec
