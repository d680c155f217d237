"""Facts: values stored once by content digest, shared by every run."""

from __future__ import annotations

from typing import Any, TypeVar, overload

from keel.client.base import ClientBase
from keel.core import codec
from keel.core.facts import value_digest
from keel.errors import FactNotFoundError
from keel.store._checks import check_digest

T = TypeVar("T")


class FactsMixin(ClientBase):
    """:class:`~keel.client.Client` methods for facts."""

    async def save_fact(self, value: object) -> str:
        """Store ``value`` once under its digest and return the digest: the sha256
        (hex) of its JSON encoding, written canonically (dict keys and sets
        sorted) so equal values give equal digests in every process. Saving an
        equal value again writes nothing. :class:`SerializationError` if it
        cannot be encoded."""
        data = codec.encode(value, what="fact", canonical=True)
        digest = value_digest(data)
        await self.open()
        await self.store.facts.save(digest, data)
        return digest

    @overload
    async def load_fact(self, digest: str) -> Any: ...
    @overload
    async def load_fact(self, digest: str, type: type[T]) -> T: ...
    async def load_fact(self, digest: str, type: Any = Any) -> Any:
        """The value stored under ``digest`` (by :meth:`save_fact`, or a step result
        a worker stored as a fact; see ``Worker(fact_threshold=)``), decoded to
        ``type`` (default: plain JSON values). :class:`FactNotFoundError` if none
        is stored, :class:`FactDigestError` if ``digest`` is not a digest."""
        check_digest(digest)
        await self.open()
        data = await self.store.facts.load(digest)
        if data is None:
            raise FactNotFoundError(digest)
        return codec.decode(data, type, what=f"fact {digest[:12]}...")
