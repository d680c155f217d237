"""Replay recorded journals against current code: golden journals and the replay checker.

One journal: export a run with :func:`dump_journal`, commit the file, and call
:func:`check_replay` in a test. It raises :class:`keel.NondeterminismError`
(naming the position, what was recorded and what the code asked for) as soon
as a code change would break runs recorded with the old code.

Many journals: :func:`check_runs` replays the runs of a store (filtered by
workflow, state and age, read a page at a time) and :func:`check_files`
replays exported files. Both return a :class:`ReplayCheckReport` with a
verdict for every journal rather than stopping at the first problem;
``keel replay`` is the same from the command line, and :func:`export_runs`
(``keel runs export``) writes the files.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote
from uuid import UUID

import msgspec

from keel._selection import PAGE_SIZE, iter_runs, open_source
from keel.client import Client
from keel.core import codec
from keel.core.events import EventType, RunCompleted, RunContinued, RunFailed, RunStarted, read
from keel.core.journal import JournalEntry, journal_filename, journal_text
from keel.core.replay import Execution
from keel.core.states import RunState
from keel.errors import GraphDefinitionError, NondeterminismError, RunNotFoundError, StoreError
from keel.graph.stored import load_spec, placeholder_graph
from keel.store.base import EventRecord, RunRecord
from keel.store.ports import Store
from keel.worker.replaying import INPUT_OF_WORKFLOW, Replayer, journal_of
from keel.workflow.definitions import WorkflowDef
from keel.workflow.registry import Registry, default_registry

__all__ = [
    "JournalVerdict",
    "ReplayCheckReport",
    "ReplayReport",
    "check_files",
    "check_journal",
    "check_replay",
    "check_runs",
    "dump_journal",
    "export_runs",
    "iter_runs",
    "journal_filename",
    "journal_files",
    "journal_from_rows",
    "load_journal",
]


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """What replaying a journal produced."""

    status: str  # "completed" | "failed" | "cancelled" | "continued" | "terminated" | "suspended"
    result: Any  # decoded result when completed
    events_replayed: int


@dataclass(frozen=True, slots=True)
class JournalVerdict:
    """The checker's verdict on one journal.

    ``ok``: the current code replays it (``outcome`` says how replay ended).
    ``diverged``: it does not; ``position`` is the journal seq where code and
    journal part, ``recorded`` what the journal holds there and ``requested``
    what the code asked for. ``skipped``: not checked; ``message`` says why.
    ``nothing_to_check``: the run failed before any of its code ran (its input
    did not decode), so there is nothing the code could diverge from.
    """

    run_id: str
    workflow: str
    status: Literal["ok", "diverged", "skipped", "nothing_to_check"]
    source: str = ""  # the file it was read from; "" for a run read from a store
    events: int = 0
    outcome: str | None = None
    position: int | None = None
    recorded: str | None = None
    requested: str | None = None
    message: str = ""


@dataclass
class ReplayCheckReport:
    """The verdicts of one check, in the order the journals were read."""

    results: list[JournalVerdict] = field(default_factory=list)

    @property
    def ok(self) -> list[JournalVerdict]:
        return [v for v in self.results if v.status == "ok"]

    @property
    def diverged(self) -> list[JournalVerdict]:
        return [v for v in self.results if v.status == "diverged"]

    @property
    def skipped(self) -> list[JournalVerdict]:
        return [v for v in self.results if v.status == "skipped"]

    @property
    def nothing_to_check(self) -> list[JournalVerdict]:
        return [v for v in self.results if v.status == "nothing_to_check"]

    def passed(self, *, strict: bool = False) -> bool:
        """No journal diverged (and, with ``strict``, none was skipped)."""
        return not self.diverged and not (strict and self.skipped)

    def summary(self) -> str:
        n = len(self.results)
        text = (
            f"{n} journal{'s' if n != 1 else ''} checked: {len(self.ok)} replay, "
            f"{len(self.diverged)} diverged, {len(self.skipped)} skipped"
        )
        if self.nothing_to_check:
            text += f", {len(self.nothing_to_check)} with nothing to check"
        return text

    def assert_passed(self, *, strict: bool = False) -> None:
        """Raise ``AssertionError`` listing every problem (for use in tests)."""
        if self.passed(strict=strict):
            return
        problems = self.diverged + (self.skipped if strict else [])
        lines = [f"{v.source or v.run_id}: {v.status}: {v.message}" for v in problems]
        raise AssertionError("\n".join([self.summary(), *lines]))


#: The message of a verdict reached with a graph rebuilt from its stored spec.
FROM_SPEC = "checked against the graph's stored spec, without its code; arguments not compared"


class _EndedDifferently(AssertionError):
    """Every command replays, but the code ends differently from how the run ended."""

    def __init__(self, position: int, recorded: str, requested: str) -> None:
        super().__init__(
            f"at journal position {position} the recorded run ended with {recorded}, "
            f"but replay ended {requested}"
        )
        self.position = position
        self.recorded = recorded
        self.requested = requested


class _NoLiveValues:
    """Replay of a complete journal never reaches the live tail; if it does, the
    values are fixed so the check itself stays deterministic."""

    def now(self) -> datetime:
        return datetime(2000, 1, 1, tzinfo=UTC)

    def uuid4(self) -> UUID:
        return UUID(int=0)

    def random(self) -> float:
        return 0.0


# --- files --------------------------------------------------------------------------------


def dump_journal(events: Iterable[EventRecord], path: str | Path) -> None:
    """Write a run's journal as readable JSON (one object per event)."""
    Path(path).write_text(journal_text(events))


def load_journal(path: str | Path) -> list[JournalEntry]:
    """Read a journal written by :func:`dump_journal`; ``ValueError`` names what is wrong."""
    path = Path(path)
    try:
        journal = journal_from_rows(json.loads(path.read_text()))
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise ValueError(f"{path} is not a journal exported by Keel: {exc}") from None
    if not journal or journal[0].type is not EventType.RUN_STARTED:
        raise ValueError(f"{path} is not a journal: it does not start with run_started")
    return journal


def journal_from_rows(rows: object) -> list[JournalEntry]:
    """A journal from the rows :func:`dump_journal` writes, JSON-decoded (a list
    of objects with ``seq``, ``type``, ``command`` and ``data``); ``ValueError``
    names what is wrong."""
    if not isinstance(rows, list):
        raise ValueError("expected a JSON list of events")
    return [_entry(i, row) for i, row in enumerate(rows)]


def _entry(index: int, row: Any) -> JournalEntry:
    if not isinstance(row, dict) or not {"seq", "type", "command", "data"} <= row.keys():
        raise ValueError(f"event {index} is not an object with seq, type, command and data")
    if row["seq"] != index:
        # The journal is contiguous from 0; a gap means the file was cut or edited.
        raise ValueError(f"event {index} has seq {row['seq']!r}")
    try:
        type_ = EventType(row["type"])
    except ValueError:
        raise ValueError(f"event {index} has an unknown type {row['type']!r}") from None
    return JournalEntry(index, type_, row["command"], msgspec.json.encode(row["data"]))


def journal_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """The journal files named by ``paths``: files as given, directories' ``*.json`` sorted."""
    for item in paths:
        path = Path(item)
        if path.is_dir():
            found = sorted(path.glob("*.json"))
            if not found:
                raise ValueError(f"{path} holds no journal files (*.json)")
            yield from found
        elif path.exists():
            yield path
        else:
            raise FileNotFoundError(f"{path}: no such file or directory")


# --- one journal --------------------------------------------------------------------------


def check_replay(
    workflow: WorkflowDef[Any, Any],
    journal: Sequence[JournalEntry],
    *,
    run_id: str = "replay",
    check_args: bool = True,
) -> ReplayReport:
    """Replay ``journal`` through ``workflow``'s current code.

    Raises :class:`keel.NondeterminismError` on divergence, or ``AssertionError``
    if the code now ends differently from how the recorded run ended.
    ``check_args=False`` does not compare commands' arguments hashes (for a
    graph rebuilt from its stored spec, see :mod:`keel.graph.stored`).
    """
    if not journal or journal[0].type is not EventType.RUN_STARTED:
        raise ValueError("a journal starts with its run_started event")
    data = bytes(read(RunStarted, journal[0].data).input)
    # The worker's own replay: the same decoding of the input, the same execution.
    ex = Replayer(workflow, run_id, data, _NoLiveValues(), check_args=check_args)(journal)
    try:
        return _ending(workflow, ex, journal)
    finally:
        # Unwind the workflow coroutine (its finally blocks run) whatever happened.
        with contextlib.suppress(Exception):
            ex.evict()


def _ending(
    workflow: WorkflowDef[Any, Any], ex: Execution, journal: Sequence[JournalEntry]
) -> ReplayReport:
    """Compare how the code ends after the whole journal with how the run ended."""
    last = journal[-1]
    ended = last.type
    outcome = ex.outcome
    if ended is EventType.RUN_TERMINATED:
        # An operator ended it from outside, wherever the code was: every event
        # before it replayed, and there is no ending of the code's to compare.
        return ReplayReport("terminated", None, len(journal))
    if outcome is None:
        if ended in (EventType.RUN_COMPLETED, EventType.RUN_FAILED, EventType.RUN_CONTINUED):
            raise NondeterminismError(
                ex.run_id,
                last.seq,
                f"the run ending with {ended.value}",
                "more commands (the code did not finish)",
            )
        # run_cancelled without cancel_requested: cancelled before the workflow
        # saw the request (nothing had run yet, or a journal from before Keel
        # journaled the request).
        status = "cancelled" if ended is EventType.RUN_CANCELLED else "suspended"
        return ReplayReport(status, None, len(journal))
    if ended is EventType.RUN_COMPLETED:
        recorded = bytes(read(RunCompleted, last.data).result)
        if outcome.status != "completed" or msgspec.json.decode(recorded) != msgspec.json.decode(
            outcome.result or b"null"
        ):
            got = (outcome.result or b"").decode() or repr(outcome.error)
            raise _EndedDifferently(
                last.seq, f"run_completed {recorded.decode()}", f"{outcome.status} with {got}"
            )
    elif ended is EventType.RUN_CONTINUED:
        # continue-as-new: the code must ask for it again, with the same input.
        recorded = bytes(read(RunContinued, last.data).input)
        if outcome.status != "continued" or msgspec.json.decode(recorded) != msgspec.json.decode(
            outcome.result or b"null"
        ):
            got = (outcome.result or b"").decode() or repr(outcome.error)
            raise _EndedDifferently(
                last.seq, f"run_continued {recorded.decode()}", f"{outcome.status} with {got}"
            )
    elif ended in (EventType.RUN_FAILED, EventType.RUN_CANCELLED):
        want = "failed" if ended is EventType.RUN_FAILED else "cancelled"
        if outcome.status != want:
            raise _EndedDifferently(last.seq, ended.value, outcome.status)
    result = (
        codec.decode(outcome.result, workflow.result_type)
        if outcome.status == "completed" and outcome.result is not None
        else None
    )
    return ReplayReport(outcome.status, result, len(journal))


def _workflow_for(
    registry: Registry, name: str, version: str | None
) -> WorkflowDef[Any, Any] | None:
    """The code to replay a run of workflow ``name`` recorded at ``version`` with.

    The checker's one registry lookup. A worker resumes a run only on its
    recorded version, so that one is checked when it is registered (an old
    version kept beside the new). Otherwise the current version is: the
    question is then whether the new code could take the run over, which is
    what a deploy that drops the old version (or pins one version and uses
    ``patched()``) relies on.
    """
    if version is not None:
        exact = registry.find(name, version)
        if exact is not None:
            return exact
    return registry.find(name)


def check_journal(
    journal: Sequence[JournalEntry],
    registry: Registry | None = None,
    *,
    run_id: str = "replay",
    source: str = "",
) -> JournalVerdict:
    """Replay one journal through the code ``registry`` holds for its workflow.

    Unlike :func:`check_replay` it never raises for a divergence: the verdict
    says what happened. ``registry`` defaults to the default registry.
    """
    if not journal or journal[0].type is not EventType.RUN_STARTED:
        raise ValueError("a journal starts with its run_started event")
    started = read(RunStarted, journal[0].data)
    return _verdict(journal, registry, run_id, source, started.workflow, started.version or None)


def _verdict(
    journal: Sequence[JournalEntry],
    registry: Registry | None,
    run_id: str,
    source: str,
    name: str,
    version: str | None,
    stored: WorkflowDef[Any, Any] | None = None,
) -> JournalVerdict:
    """``stored``: a graph rebuilt from its stored spec, used when ``registry``
    lacks the run's exact version (arguments are then not compared)."""
    reg = default_registry if registry is None else registry
    base = JournalVerdict(run_id, name, "ok", source, len(journal))
    exact = reg.find(name, version) if version is not None else None
    wf = exact or stored or _workflow_for(reg, name, version)
    from_spec = exact is None and stored is not None
    if from_spec:
        base = replace(base, message=FROM_SPEC)
    if wf is None:
        known = ", ".join(reg.names()) or "none"
        return replace(
            base,
            status="skipped",
            message=f"workflow {name!r} is not registered (registered: {known})",
        )
    if _failed_before_code(journal):
        message = read(RunFailed, journal[-1].data).error.get("message", "")
        return replace(
            base,
            status="nothing_to_check",
            message=f"the run failed before any of its code ran: {message}",
        )
    if _failed_at_replay(journal):
        return replace(
            base,
            status="skipped",
            message="the run already failed with a nondeterminism error; "
            "a failed run is never replayed again",
        )
    try:
        report = check_replay(wf, journal, run_id=run_id, check_args=not from_spec)
    except (NondeterminismError, _EndedDifferently) as exc:
        return replace(
            base,
            status="diverged",
            position=exc.position,
            recorded=exc.recorded,
            requested=exc.requested,
            message=f"{exc} ({FROM_SPEC})" if from_spec else str(exc),
        )
    except Exception as exc:  # e.g. the recorded input no longer fits the parameters
        return replace(
            base, status="diverged", message=f"replay raised {type(exc).__name__}: {exc}"
        )
    return replace(base, outcome=report.status)


def _failed_before_code(journal: Sequence[JournalEntry]) -> bool:
    """Whether a worker failed this run because its recorded input did not decode.

    Such a run ran no workflow code: its journal is ``run_started`` then the
    worker's ``run_failed`` (a SerializationError about the workflow's input),
    and replaying it only repeats the decoding failure.
    """
    if len(journal) != 2 or journal[-1].type is not EventType.RUN_FAILED:
        return False
    error = read(RunFailed, journal[-1].data).error
    return error.get("type") == "keel.errors.SerializationError" and INPUT_OF_WORKFLOW in str(
        error.get("message", "")
    )


def _failed_at_replay(journal: Sequence[JournalEntry]) -> bool:
    """Whether a worker failed this run because its journal no longer replayed.

    Such a journal stops where replay broke, so it cannot say how the code ends;
    reporting it on every later check would only repeat an old failure.
    """
    last = journal[-1]
    if last.type is not EventType.RUN_FAILED:
        return False
    error = read(RunFailed, last.data).error
    return error.get("type") == "keel.errors.NondeterminismError"


# --- many journals ------------------------------------------------------------------------


def check_files(paths: Iterable[str | Path], registry: Registry | None = None) -> ReplayCheckReport:
    """Replay exported journal files (directories: their ``*.json``), one at a time.

    Raises ``ValueError`` for a file that is not an exported journal.
    """
    report = ReplayCheckReport()
    for path in journal_files(paths):
        journal = load_journal(path)
        report.results.append(
            check_journal(journal, registry, run_id=unquote(path.stem), source=str(path))
        )
    return report


async def check_runs(
    store: Store | Client,
    registry: Registry | None = None,
    *,
    workflow: str | Iterable[str] | None = None,
    state: RunState | str | Iterable[RunState | str] | None = None,
    since: datetime | timedelta | float | None = None,
    limit: int | None = None,
    page_size: int = PAGE_SIZE,
) -> ReplayCheckReport:
    """Replay the runs of an open store or client against ``registry``'s code.

    Filters are those of :func:`iter_runs`. Runs are read a page at a time and
    each journal is dropped once checked, so memory stays bounded.
    """
    st = await open_source(store)
    report = ReplayCheckReport()
    runs = iter_runs(
        st, workflow=workflow, state=state, since=since, limit=limit, page_size=page_size
    )
    async with contextlib.aclosing(runs):
        async for run in runs:
            report.results.append(await _check_run(st, run, registry))
    return report


async def _check_run(store: Store, run: RunRecord, registry: Registry | None) -> JournalVerdict:
    records = await store.reads.history(run.run_id)
    try:
        journal = journal_of(records)
    except ValueError as exc:  # written by a newer Keel
        return JournalVerdict(
            run.run_id, run.workflow, "diverged", events=len(records), message=str(exc)
        )
    reg = default_registry if registry is None else registry
    stored: WorkflowDef[Any, Any] | None = None
    if reg.find(run.workflow, run.version) is None:
        # Not registered at its version: a graph run is checked from its stored spec.
        try:
            spec = await load_spec(store.specs, run.workflow, run.version)
            stored = None if spec is None else placeholder_graph(spec)
        except (StoreError, GraphDefinitionError) as exc:
            return JournalVerdict(
                run.run_id, run.workflow, "skipped", events=len(records), message=str(exc)
            )
    return _verdict(journal, registry, run.run_id, "", run.workflow, run.version, stored)


async def export_runs(
    store: Store | Client,
    directory: str | Path,
    *,
    run_ids: Sequence[str] = (),
    workflow: str | Iterable[str] | None = None,
    state: RunState | str | Iterable[RunState | str] | None = None,
    since: datetime | timedelta | float | None = None,
    limit: int | None = None,
) -> list[Path]:
    """Write journals as :func:`check_files` reads them, one ``<run id>.json`` per run.

    Either the runs named by ``run_ids`` (all must exist, else
    :class:`keel.RunNotFoundError` before anything is written) or those the
    filters of :func:`iter_runs` select. Existing files are overwritten.
    """
    st = await open_source(store)
    out = Path(directory)
    if run_ids:
        if workflow or state or since is not None or limit is not None:
            raise ValueError("give run ids or filters, not both")
        for run_id in run_ids:
            if await st.reads.get_run(run_id) is None:
                raise RunNotFoundError(run_id)
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    written: list[Path] = []

    async def export(run_id: str) -> None:
        path = out / journal_filename(run_id)
        await asyncio.to_thread(dump_journal, await st.reads.history(run_id), path)
        written.append(path)

    if run_ids:
        for run_id in dict.fromkeys(run_ids):
            await export(run_id)
        return written
    runs = iter_runs(st, workflow=workflow, state=state, since=since, limit=limit)
    async with contextlib.aclosing(runs):
        async for run in runs:
            await export(run.run_id)
    return written
