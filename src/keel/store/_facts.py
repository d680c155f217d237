"""Journal rows that reference stored facts, resolved where every journal is read.

Every journal reader (the worker's replay, folds, ``Client``, the CLI, the
replay checker, the dashboard, forks) goes through ``store.reads.history``, so
each backend's ``history`` passes its rows through :func:`resolved`: a
``step_completed`` row whose result was stored as a fact (see
:mod:`keel.core.facts`) comes back as the event that was written, result and
all. Rows without references cost a prefix test each.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from dataclasses import replace

from keel.core.facts import is_reference, reference_digest, splice
from keel.errors import FactNotFoundError
from keel.store.base import EventRecord

LoadMany = Callable[[Collection[str]], Awaitable[dict[str, bytes]]]


async def resolved(records: list[EventRecord], load_many: LoadMany) -> list[EventRecord]:
    """``records`` with every fact reference replaced by the event it stands for
    (one ``load_many`` read when there are any)."""
    refs = [i for i, r in enumerate(records) if is_reference(r.type, r.data)]
    if not refs:
        return records
    digests = {i: reference_digest(records[i].data) for i in refs}
    found = await load_many(set(digests.values()))
    out = list(records)
    for i, digest in digests.items():
        value = found.get(digest)
        if value is None:
            rec = records[i]
            raise FactNotFoundError(
                digest, f"the result of event {rec.seq} of run {rec.run_id!r} is missing"
            )
        out[i] = replace(records[i], data=splice(records[i].data, value))
    return out
