"""Journal snapshots as a run's driver uses them: load one to replay less, write
the next one once the journal has grown past the workflow's threshold.

The journal is the truth. A snapshot that cannot be used (corrupt or torn,
made by another workflow version or snapshot format) is ignored in favour of
the full journal; a failure to write one is logged and the run goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace

from keel.core import snapshot as sn
from keel.core.journal import JournalEntry
from keel.core.replay import Execution
from keel.errors import NondeterminismError
from keel.store.base import Lease, NewEvent, NewSnapshot, RunRecord
from keel.store.facts import FactWriter, resolved
from keel.store.ports import Store
from keel.worker.replaying import journal_of

log = logging.getLogger("keel.worker")


class Snapshots:
    """One run's snapshot state while a driver holds it: which snapshot its
    execution was built from (``upto_seq``, ``hashes``) and when the next is due."""

    def __init__(self, store: Store, run_id: str, facts: FactWriter) -> None:
        self.store = store
        self.run_id = run_id
        self.facts = facts  # large step results stay out of snapshots too
        self.every: int | None = None  # the workflow's snapshot_every (set with version)
        self.version = ""  # the workflow version replaying the run
        self.upto_seq = -1  # last seq covered by the snapshot in use (-1: none)
        self.hashes: Mapping[str, str | None] = {}  # its carried arguments hashes
        self.tried = -1  # journal seq of the last snapshot write tried (ok or not)

    @property
    def used(self) -> bool:
        """Whether the journal being replayed starts with a snapshot."""
        return self.upto_seq >= 0

    async def replay(
        self,
        run: RunRecord,
        build: Callable[[list[JournalEntry], Mapping[str, str | None]], Execution],
    ) -> Execution:
        """``build(journal, recorded_hashes)`` (which replays) over the snapshot and
        tail; if that is nondeterministic, once more over the whole journal: the
        snapshot may be what is wrong."""
        entries = await self.journal(run)
        if not self.used:
            return build(entries, self.hashes)
        try:
            return build(entries, self.hashes)
        except NondeterminismError as exc:
            log.warning(
                "run %s: replay from the snapshot up to seq %d failed (%s); "
                "replaying the whole journal",
                self.run_id,
                self.upto_seq,
                exc,
            )
        return build(await self.full_journal(), self.hashes)

    async def journal(self, run: RunRecord) -> list[JournalEntry]:
        """The journal to replay: the latest usable snapshot plus the events after
        it, or the whole journal. Sets :attr:`upto_seq` and :attr:`hashes`."""
        self.upto_seq, self.hashes = -1, {}
        record = None
        if self.every is not None and run.next_seq > self.every:
            record = await self.store.runs.load_snapshot(self.run_id)
        if record is not None:
            try:
                if record.format != sn.FORMAT or record.version != self.version:
                    raise sn.SnapshotInvalid(
                        f"made by format {record.format}, version {record.version!r}"
                    )
                if record.upto_seq >= run.next_seq:
                    raise sn.SnapshotInvalid(f"covers seq {record.upto_seq}, past the journal")
                snap = sn.decode(record.data, version=self.version, upto_seq=record.upto_seq)
            except sn.SnapshotInvalid as exc:
                log.debug("run %s: snapshot ignored, full replay: %s", self.run_id, exc)
            else:
                tail = await self.store.reads.history(self.run_id, after_seq=snap.upto_seq)
                entries = await resolved(
                    snap.entries, self.store.facts.load_many, run_id=self.run_id
                )
                self.upto_seq, self.hashes = snap.upto_seq, snap.hashes
                return [*entries, *journal_of(tail)]
        return await self.full_journal()

    async def full_journal(self) -> list[JournalEntry]:
        """The whole journal (and no snapshot in use)."""
        self.upto_seq, self.hashes = -1, {}
        return journal_of(await self.store.reads.history(self.run_id))

    async def maybe_save(self, lease: Lease, ex: Execution) -> None:
        """Write a snapshot of ``ex``'s journal if enough events were journaled
        since the last one. Call only when every event of ``ex`` is durable."""
        if self.every is None or ex.outbox or ex.outcome is not None:
            return
        upto = ex.next_seq - 1
        if upto - max(self.upto_seq, self.tried) < self.every:
            return
        self.tried = upto  # after a failure, the next try is ``every`` events later
        try:
            snap = sn.compact(ex.journal, upto, self.version, self.hashes)
            data = sn.encode(await self._referencing(snap))
            await self.store.runs.save_snapshot(
                lease, NewSnapshot(upto, self.version, sn.FORMAT, data)
            )
        except Exception as exc:
            # The journal is the truth: a run never fails for want of a snapshot.
            log.warning("run %s: could not write a snapshot: %r", self.run_id, exc)
            return
        self.upto_seq, self.hashes = upto, snap.hashes

    async def _referencing(self, snap: sn.Snapshot) -> sn.Snapshot:
        """``snap`` with its large step results as fact references (saved as facts
        if the journal writes did not: the same writer, the same threshold)."""
        entries = snap.entries
        rows = await self.facts.rows([NewEvent(e.type.value, e.command, e.data) for e in entries])
        if all(row.data is e.data for row, e in zip(rows, entries, strict=True)):
            return snap
        kept = [
            e if row.data is e.data else replace(e, data=row.data)
            for row, e in zip(rows, entries, strict=True)
        ]
        return replace(snap, entries=kept)
