"""Journal rows that reference stored facts: written by one helper, resolved
where every journal is read.

Writing: :class:`FactWriter` turns the ``step_completed`` events whose result
is larger than a threshold into references (see :mod:`keel.core.facts`),
saving each result as a fact first. The worker passes every turn through it
before the fenced journal write, and a fork passes the journal it copies, so
the fork shares the original's facts. A fact saved by a write that then never
commits (the worker dies between the two, or loses its lease) is harmless: a
fact is a value under its own digest, nothing refers to it, and the step's
next completion saves the same bytes under the same digest (nothing written).

Reading: every journal reader (the worker's replay, folds, ``Client``, the
CLI, the replay checker, the dashboard, forks) goes through
``store.reads.history``, so each backend's ``history`` passes its rows through
:func:`resolved`, which gives back the events as they were written. Rows
without references cost a prefix test each. A worker's journal snapshot keeps
references too (written through the worker's writer, resolved on load).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import replace
from typing import TypeVar

from keel.core.facts import FACT_THRESHOLD, externalize, is_reference, reference_digest, splice
from keel.core.journal import JournalEntry
from keel.errors import ConfigurationError, FactNotFoundError
from keel.store.base import EventRecord, NewEvent
from keel.store.ports import Facts

LoadMany = Callable[[Collection[str]], Awaitable[dict[str, bytes]]]
R = TypeVar("R", EventRecord, JournalEntry)

_STEP_COMPLETED = "step_completed"


async def resolved(records: list[R], load_many: LoadMany, *, run_id: str | None = None) -> list[R]:
    """``records`` (journal rows, or a snapshot's entries of run ``run_id``) with
    every fact reference replaced by the event it stands for (one ``load_many``
    read when there are any)."""
    refs = [i for i, r in enumerate(records) if is_reference(r.type, r.data)]
    if not refs:
        return records
    digests = {i: reference_digest(records[i].data) for i in refs}
    found = await load_many(set(digests.values()))
    out = list(records)
    for i, digest in digests.items():
        value = found.get(digest)
        rec = records[i]
        if value is None:
            run = getattr(rec, "run_id", run_id)
            raise FactNotFoundError(
                digest, f"the result of event {rec.seq} of run {run!r} is missing"
            )
        out[i] = replace(rec, data=splice(rec.data, value))
    return out


def check_threshold(threshold: int | None) -> int | None:
    """A fact threshold: bytes (at least 1 KiB: smaller facts would cost more than
    they save), or ``None`` to keep every result in the journal."""
    if threshold is not None and (
        isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1024
    ):
        raise ConfigurationError(
            f"fact_threshold must be a number of bytes >= 1024, or None, not {threshold!r}"
        )
    return threshold


class FactWriter:
    """Saves step results larger than ``threshold`` bytes as facts and gives the
    journal rows that reference them (``threshold=None``: keeps every result).

    Remembers the digests it saved lately, so an equal large result is sent to
    the store once per writer, not once per step (facts are never deleted).
    """

    REMEMBERED = 4096

    def __init__(self, facts: Facts, threshold: int | None = FACT_THRESHOLD) -> None:
        self.facts = facts
        self.threshold = check_threshold(threshold)
        self._saved: OrderedDict[str, None] = OrderedDict()

    async def rows(self, events: Sequence[NewEvent]) -> list[NewEvent]:
        """``events`` as the journal stores them (the list itself when none is large)."""
        threshold = self.threshold
        if threshold is None or not any(
            e.type == _STEP_COMPLETED and len(e.data) > threshold for e in events
        ):
            return events if isinstance(events, list) else list(events)
        out = []
        for e in events:
            ref = externalize(e.data, threshold) if e.type == _STEP_COMPLETED else None
            if ref is None:
                out.append(e)
                continue
            data, digest, value = ref
            await self.save(digest, value)
            out.append(NewEvent(e.type, e.command, data))
        return out

    async def save(self, digest: str, value: bytes) -> None:
        """Save a fact unless this writer saved it lately."""
        if digest in self._saved:
            self._saved.move_to_end(digest)
            return
        await self.facts.save(digest, value)
        self._saved[digest] = None
        if len(self._saved) > self.REMEMBERED:
            self._saved.popitem(last=False)
