"""Replay: one execution of a workflow function against its journal.

The workflow coroutine runs on a :class:`~keel.core.loop.DeterministicLoop`.
Every effect it asks for is a *command* with an identity (kind, name,
ordinal). The journal is fed back in ``seq`` order, one event at a time, with
the loop run to quiescence after each, which reproduces exactly the order in
which the live execution saw them. So parallel steps (``asyncio.gather``)
replay identically whatever order they finished in, and any difference between
code and journal is caught at the first event that does not fit. Where that
round cannot change anything, an awaited command takes its event at the await
(:meth:`Execution.on_await`); event bookkeeping itself is in
:mod:`keel.core.resolve`.

When the journal is exhausted the execution is *live*: the worker reads
:meth:`Execution.pending`, carries the commands out, and reports each outcome
with :meth:`Execution.record`, which journals it (into :attr:`outbox`) and
feeds it through the same path replay uses.

Cancellation is journaled too (``cancel_requested``, where it reached the
workflow): the workflow's pending commands are discarded and their awaits raise
:class:`WorkflowCancelled`; cleanup code may then issue new commands, which
replay like any others. Commands issued under :func:`shielded` (compensations)
are not discarded; a cancel that finds nothing else to interrupt is *deferred*
to the end of the shielded work (see :meth:`Execution.take_deferred_cancel`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Callable, Coroutine, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from keel.core import codec
from keel.core.commands import ALLOWED, Command, LiveSource, Outcome, describe_event
from keel.core.events import (
    KIND_TEXT,
    RUN_EVENTS,
    CancelRequested,
    CommandId,
    CommandKind,
    Event,
    EventType,
    Patched,
    SideEffect,
    encode,
    read,
)
from keel.core.journal import JournalEntry
from keel.core.loop import DeterministicLoop
from keel.core.resolve import INLINE_PROGRESS, INLINE_RESOLVING, apply_event, check_args_hash
from keel.errors import (
    ContinueAsNew,
    ControlFlowSwallowedError,
    KeelControl,
    NondeterminismError,
    PatchMismatchError,
    SerializationError,
    WorkflowCancelled,
    WorkflowError,
    WorkflowSuspended,
)

_current: contextvars.ContextVar[Execution | None] = contextvars.ContextVar(
    "keel_execution", default=None
)
_shielded: contextvars.ContextVar[bool] = contextvars.ContextVar("keel_shielded", default=False)


#: The execution whose workflow code is running now, if any. The ContextVar's
#: own ``get``: every command a workflow issues starts with this call.
current_execution: Callable[[], Execution | None] = _current.get


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Commands issued inside (by this task, and tasks it creates) survive a
    cancel request: a saga's compensations must run to their end."""
    token = _shielded.set(True)
    try:
        yield
    finally:
        reset_var(_shielded, token)


def reset_var(var: contextvars.ContextVar[Any], token: contextvars.Token[Any]) -> None:
    """``var.reset(token)``, unless the workflow coroutine is being closed from
    outside its task (an abandoned execution garbage-collected): then the
    current context is not the workflow's and there is nothing to restore."""
    with contextlib.suppress(ValueError):
        var.reset(token)


class CommandFuture(asyncio.Future[Any]):
    """The future of a command. Awaited while pending and while replaying, it
    first lets the execution resolve it on the spot (see :meth:`Execution.on_await`)."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, Any]:
        # Only when nothing else waits on it: callbacks would run before the
        # awaiting task resumes, and must keep that order.
        if self._callbacks is None and not self.done():
            execution = _current.get()
            if execution is not None and execution._replaying:
                execution.on_await(self)
        return _future_await(self)

    __iter__ = __await__


_future_await = asyncio.Future.__await__


class _Abort(KeelControl):
    """Unwinds workflow code after a fatal replay error; never seen by users."""


@dataclass
class _Closing:
    exc_type: type[KeelControl]
    swallowed: bool = False
    extra: list[str] = field(default_factory=list)


class Execution:
    """One in-memory execution of a workflow function over a journal."""

    def __init__(
        self,
        run_id: str,
        fn: Callable[..., Coroutine[Any, Any, Any]],
        args: Sequence[Any],
        kwargs: dict[str, Any],
        journal: Sequence[JournalEntry],
        live: LiveSource,
        *,
        workflow_name: str = "",
        recorded_hashes: Mapping[str, str | None] | None = None,
        check_args: bool = True,
    ) -> None:
        # ``check_args=False`` compares commands and results but not arguments
        # hashes: for a graph rebuilt from its stored spec (keel.graph.stored),
        # whose values lack the annotations that shaped the recorded arguments.
        # ``journal`` may be a compacted one (core/snapshot.py): seqs then have
        # gaps, and ``recorded_hashes`` holds the arguments hashes of commands
        # whose first event it no longer has.
        self.run_id = run_id
        self.workflow_name = workflow_name or getattr(fn, "__qualname__", "workflow")
        self.journal: list[JournalEntry] = list(journal)
        self.cursor = 0
        self.outbox: list[JournalEntry] = []
        self.outcome: Outcome | None = None
        #: The run's cancel request has reached the workflow (journaled, so replay-stable).
        self.cancel_requested = False
        self._cancel_deferred = False  # requested, but nothing was there to interrupt yet
        #: continue_as_new() was called with this encoded input (see :meth:`continue_as_new`).
        self.continue_input: bytes | None = None
        self._fn = fn
        self._args = tuple(args)
        self._kwargs = dict(kwargs)
        self._live = live
        self._loop = DeterministicLoop()  # type: ignore[abstract]  # only what tasks use
        self._counters: dict[tuple[CommandKind, str], int] = {}
        self._last: Command | None = None  # the command issued last
        # Children are looked up by the driver after they resolve; other
        # commands are dropped when resolved (a long replay stays small).
        self._children: list[Command] = []
        self._pending: dict[str, Command] = {}
        self._fatal: BaseException | None = None
        self._closing: _Closing | None = None
        self._main: asyncio.Task[Any] | None = None
        # Commands the journal holds events of (their arguments hashes are
        # compared at their first event, see _apply).
        self._journaled: set[str] = set()
        self._carried_hashes = {k: v for k, v in (recorded_hashes or {}).items() if v is not None}
        self._replaying = False  # inside start(): awaits may be resolved on the spot
        # Patch decisions of this execution: True/False, None once deprecated.
        self._patches: dict[str, bool | None] = {}
        self._markers: dict[str, int] = {}  # patch marker command -> its journal position
        for entry in self.journal:
            if entry.type is EventType.PATCHED and entry.command not in self._journaled:
                self._markers[entry.command or ""] = entry.seq
            self._journaled.add(entry.command or "")
        self._journaled.update(self._carried_hashes)
        if not check_args:
            self._journaled.clear()  # no command is then checked (see command())

    # --- driving (worker side) -------------------------------------------------------
    def start(self) -> None:
        """Run the workflow from the top and replay the whole journal.

        Raises :class:`NondeterminismError` if code and journal disagree.
        """
        while self.cursor < len(self.journal) and self.journal[self.cursor].type in RUN_EVENTS:
            self.cursor += 1  # run_started: not a command
        ctx = contextvars.copy_context()
        ctx.run(_current.set, self)
        self._replaying = True
        with self._loop.installed():
            try:
                self._replay(ctx)
            finally:
                self._replaying = False

    def _replay(self, ctx: contextvars.Context) -> None:
        self._main = main = self._loop.create_task(self._run_main(), context=ctx)
        self._settle()
        journal, pending = self.journal, self._pending
        drain = self._loop.drain
        while self.cursor < len(journal):
            entry = journal[self.cursor]
            if entry.type in RUN_EVENTS:
                self.cursor += 1
                continue
            if entry.type is EventType.CANCEL_REQUESTED:
                self.cursor += 1
                if not self.cancel_requested:
                    self._deliver_cancel()
                continue
            cmd = pending.get(entry.command or "")
            if cmd is None:
                raise self._mismatch(entry)
            self.cursor += 1
            self._apply(cmd, entry)
            drain()  # _settle() without its checks, unless they have work to do
            if self._fatal is not None or main.done():
                self._settle()

    @property
    def next_seq(self) -> int:
        # Not len(journal): a journal compacted by a snapshot has gaps.
        return self.journal[-1].seq + 1 if self.journal else 0

    @property
    def replaying(self) -> bool:
        return self.cursor < len(self.journal)

    def pending(self) -> list[Command]:
        """Unresolved commands, in issue order."""
        return list(self._pending.values())  # dicts keep insertion (= issue) order

    def record(self, cmd: Command | None, event: Event) -> JournalEntry:
        """Journal a live event of ``cmd`` (``None``: of the run) into
        :attr:`outbox` and feed it to the workflow."""
        type_, data = encode(event)
        entry = JournalEntry(self.next_seq, type_, cmd.key if cmd else None, data)
        self.journal.append(entry)
        self.outbox.append(entry)
        self.cursor += 1
        if cmd is not None:
            self._apply(cmd, entry, event)
            self._settle()
        return entry

    def children(self) -> list[Command]:
        """Child commands issued so far (resolved or not), in issue order."""
        return list(self._children)

    def take_outbox(self) -> list[JournalEntry]:
        out, self.outbox = self.outbox, []
        return out

    def cancel(self) -> None:
        """Deliver the run's cancel request at the live tail.

        Journals ``cancel_requested`` (into :attr:`outbox`), discards the
        pending commands that are not shielded and raises
        :class:`WorkflowCancelled` at their awaits. A second call does nothing:
        cleanup code is never interrupted by a later request.
        """
        if self.outcome is not None or self.cancel_requested:
            return
        assert not self.replaying, "cancel() is for the live tail"
        type_, data = encode(CancelRequested())
        entry = JournalEntry(self.next_seq, type_, None, data)
        self.journal.append(entry)
        self.outbox.append(entry)
        self.cursor += 1
        self._deliver_cancel()

    def take_deferred_cancel(self) -> bool:
        """Whether a cancel request is waiting for shielded work to end; the
        caller then raises :class:`WorkflowCancelled` (and this returns ``False``
        from now on)."""
        deferred, self._cancel_deferred = self._cancel_deferred, False
        return deferred

    def evict(self) -> bool:
        """Unwind the workflow code before dropping this execution.

        Returns ``False`` if the code swallowed the :class:`WorkflowSuspended`.
        """
        if self.outcome is not None or self._main is None:
            self._release()
            return True
        # A replay error was raised by start() already: unwind quietly, without
        # raising it again (the driver evicts in a ``finally``).
        failed, self._fatal = self._fatal is not None, None
        self._close_with(WorkflowSuspended)
        closing = self._closing
        ok = failed or (closing is not None and not closing.swallowed)
        self._release()
        return ok

    def _release(self) -> None:
        """Drop the references that make cycles through this execution: its
        main task's context holds the execution (the ``_current`` variable),
        ready callbacks hold the tasks, and unwound commands hold frames.
        Freed by reference counting, a finished run never reaches the garbage
        collector's older generations, whose collections were a large share
        of a busy worker's CPU."""
        self._main = None
        self._loop.close()
        # An unwound command's future holds the WorkflowSuspended that unwound
        # it, whose traceback's frames hold the future.
        for cmd in self._pending.values():
            for future in (cmd.future, cmd.started):
                if future is not None and future.done() and not future.cancelled():
                    exc = future.exception()
                    if exc is not None:
                        exc.__traceback__ = None
        self._pending.clear()
        self._closing = None
        self._last = None

    # --- used by the workflow-facing API ------------------------------------------------
    def issue(
        self,
        kind: CommandKind,
        name: str,
        *,
        result_type: Any = Any,
        target: Any = None,
        args: bytes | None = None,
        duration: float | None = None,
        timeout: float | None = None,
        idempotency_key: str | None = None,
        hash_extra: bytes = b"",
    ) -> Command:
        """Register a command that resolves later (step, sleep, signal, side effect, child).

        ``hash_extra`` joins ``args`` in the arguments hash (a child's id and
        parent-close policy), so changing it under a running workflow is caught.
        Raises :class:`WorkflowCancelled` instead if a deferred cancel request
        is waiting and this command is not shielded.
        """
        shield = _shielded.get()
        if self._cancel_deferred and self._closing is None and not shield:
            self._cancel_deferred = False
            raise WorkflowCancelled()
        if self._closing is not None or self._fatal is not None:
            self._next_id(kind, name)  # raises
        counters = self._counters
        ordinal = counters.get((kind, name), 0)
        counters[kind, name] = ordinal + 1
        cid = CommandId(kind, name, ordinal)  # as _next_id() does, inline: the hot path
        key = f"{KIND_TEXT[kind]}:{name}#{ordinal}"  # str(cid), without the call
        args_hash = (
            codec.args_hash(args + hash_extra if hash_extra else args) if args is not None else None
        )
        cmd = Command(
            cid,
            key,
            CommandFuture(loop=self._loop),
            result_type,
            target,
            args,
            args_hash,
            duration,
            timeout,
            idempotency_key,
            shield,
            args_hash is not None and key in self._journaled,
        )
        if kind is CommandKind.CHILD:
            cmd.started = self._loop.create_future()
            self._children.append(cmd)
        self._last = cmd
        self._pending[key] = cmd
        return cmd

    def immediate(self, kind: CommandKind, result_type: Any, produce: Callable[[], Any]) -> Any:
        """A value produced on the spot and journaled (``now``, ``uuid4``, ``random``)."""
        cid = self._next_id(kind, kind.value)
        key = str(cid)
        if self.cursor < len(self.journal):
            entry = self.journal[self.cursor]
            if entry.command != key or entry.type is not EventType.SIDE_EFFECT:
                self._abort(self._mismatch(entry, requested=cid.describe()))
            self.cursor += 1
            return codec.decode(read(SideEffect, entry.data).value, result_type, what=key)
        value_json = codec.encode(produce(), what=key)
        type_, data = encode(SideEffect(value=msgspec.Raw(value_json)))
        entry = JournalEntry(self.next_seq, type_, key, data)
        self.journal.append(entry)
        self.outbox.append(entry)
        self.cursor += 1
        return codec.decode(value_json, result_type, what=key)

    def patch(self, name: str, *, deprecated: bool = False) -> bool:
        """Decide patch ``name`` for this run (``patched()``, ``deprecate_patch()``).

        The first call decides and later calls repeat it. Live, it journals a
        marker and is True. In replay it is True only when that marker is the
        next event; a run recorded before the patch has none there, so it is
        False and consumes nothing, and the commands after it still match. A
        deprecated patch consumes a marker that is there and journals none.
        """
        if name in self._patches:
            decided = self._patches[name]
            if decided is None and not deprecated:
                raise WorkflowError(
                    f"patch {name!r} was deprecated with deprecate_patch() in this workflow; "
                    "it cannot also be checked with patched()"
                )
            return bool(decided)
        key = str(self._next_id(CommandKind.PATCH, name))  # ordinal 0: one marker per name
        found = False
        if self.cursor < len(self.journal):
            entry = self.journal[self.cursor]
            if entry.type is EventType.PATCHED and entry.command == key:
                found = True
                self.cursor += 1
            elif key in self._markers:
                # The recorded run first asked for this patch later on: the name
                # now marks another place, and the decisions would disagree.
                self._abort(PatchMismatchError(self.run_id, entry.seq, name, self._markers[key]))
        elif not deprecated:
            type_, data = encode(Patched(patch=name))
            entry = JournalEntry(self.next_seq, type_, key, data)
            self.journal.append(entry)
            self.outbox.append(entry)
            self.cursor += 1
            found = True
        self._patches[name] = None if deprecated else found
        return found

    @property
    def live(self) -> LiveSource:
        return self._live

    def on_await(self, future: asyncio.Future[Any]) -> None:
        """Workflow code awaits a pending command while replaying.

        When nothing else could run before the journal's next event and that
        event is this command's, the usual round (suspend, quiesce, feed the
        event, wake the task) would end exactly the same way: apply it here,
        and the await returns without suspending. This halves the cost of
        replaying sequential code. Progress events of the command (attempts,
        timer_started) are applied on the way to its resolving one.
        """
        if self._loop._ready:  # something else would run first
            return
        task = asyncio.current_task(self._loop)
        if task is None or task.cancelling():
            return  # the task has a cancellation to take at its next suspension
        # The command just issued (sequential code); anything else takes the usual round.
        cmd = self._last
        if cmd is None or cmd.future is not future:
            return
        journal = self.journal
        while self.cursor < len(journal):
            entry = journal[self.cursor]
            if entry.command != cmd.key:
                return
            resolves = entry.type in INLINE_RESOLVING
            if not resolves and entry.type not in INLINE_PROGRESS:
                return
            self.cursor += 1
            try:
                self._apply(cmd, entry)
            except NondeterminismError as err:
                self._abort(err)
            if resolves:
                return

    # --- internals --------------------------------------------------------------------
    def _next_id(self, kind: CommandKind, name: str) -> CommandId:
        if self._closing is not None:
            # Workflow code caught our control exception and went on issuing commands.
            self._closing.swallowed = True
            raise self._closing.exc_type()
        if self._fatal is not None:
            raise _Abort()
        ordinal = self._counters.get((kind, name), 0)
        self._counters[(kind, name)] = ordinal + 1
        return CommandId(kind, name, ordinal)

    async def _run_main(self) -> Any:
        return await self._fn(*self._args, **self._kwargs)

    def _settle(self) -> None:
        """Run the loop to quiescence; surface fatal errors; note how main ended."""
        self._loop.run_until_quiescent()
        if self._fatal is not None:
            raise self._fatal
        main = self._main
        if main is None or not main.done() or self.outcome is not None:
            return
        if self._closing is not None and self._closing.exc_type is WorkflowSuspended:
            exc = main.exception() if not main.cancelled() else None
            if not isinstance(exc, WorkflowSuspended):
                self._closing.swallowed = True
            return
        self.outcome = self._outcome_of(main)
        if self.replaying:
            rest = [e for e in self.journal[self.cursor :] if e.type not in RUN_EVENTS]
            if rest:
                raise self._mismatch(rest[0], requested="the workflow to return")

    def _outcome_of(self, main: asyncio.Task[Any]) -> Outcome:
        if main.cancelled():
            return Outcome("failed", error=WorkflowError("the workflow's main task was cancelled"))
        exc = main.exception()
        if isinstance(exc, ContinueAsNew) or (exc is None and self.continue_input is not None):
            return self._continued(exc)
        if exc is None and self.cancel_requested and not self._cancel_deferred:
            # Cleanup may run steps, but the run ends only by re-raising.
            return Outcome(
                "failed",
                error=ControlFlowSwallowedError(
                    "the workflow caught keel.WorkflowCancelled and did not re-raise it; "
                    "cleanup code must let cancellation through"
                ),
            )
        if exc is None:
            try:
                data = codec.encode(
                    main.result(), what=f"result of workflow {self.workflow_name!r}"
                )
            except Exception as enc_exc:
                return Outcome("failed", error=enc_exc)
            return Outcome("completed", result=data)
        if isinstance(exc, WorkflowCancelled):
            return Outcome("cancelled", error=exc)
        if isinstance(exc, KeelControl):
            return Outcome(
                "failed", error=ControlFlowSwallowedError(f"stray control exception {exc!r}")
            )
        return Outcome("failed", error=exc)

    def _continued(self, exc: BaseException | None) -> Outcome:
        """After continue_as_new(): a delivered cancel wins; swallowing it fails the run."""
        if self.cancel_requested and not self._cancel_deferred:
            return Outcome("cancelled", error=WorkflowCancelled())
        if isinstance(exc, ContinueAsNew):
            return Outcome("continued", result=exc.input)
        return Outcome(
            "failed",
            error=ControlFlowSwallowedError(
                "the workflow caught keel.ContinueAsNew (raised by keel.continue_as_new()) and "
                "did not re-raise it; let Keel's control exceptions through"
            ),
        )

    def continue_as_new(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> ContinueAsNew:
        """Encode the successor's input against the workflow's signature (bad input
        raises here, at the call) and return the control exception to raise."""
        what = f"continue_as_new of workflow {self.workflow_name!r}"
        try:
            self.continue_input = codec.encode_args(self._fn, args, kwargs, what=what)
        except SerializationError:
            raise
        except TypeError as exc:
            raise TypeError(f"bad arguments for {what}: {exc}") from None
        return ContinueAsNew(self.continue_input)

    def _close_with(self, exc_type: type[KeelControl]) -> None:
        if self.outcome is not None:
            return
        self._closing = _Closing(exc_type)
        for cmd in list(self._pending.values()):
            if not cmd.future.done():
                cmd.future.set_exception(exc_type())
            if cmd.started is not None and not cmd.started.done():
                cmd.started.set_exception(exc_type())
        self._settle()

    def _deliver_cancel(self) -> None:
        """Discard the unshielded pending commands; their awaits raise WorkflowCancelled."""
        self.cancel_requested = True
        interrupted = False
        for cmd in [c for c in self._pending.values() if not c.shielded]:
            del self._pending[cmd.key]
            if not cmd.future.done():
                cmd.future.set_exception(WorkflowCancelled())
                interrupted = True
            if cmd.started is not None and not cmd.started.done():
                cmd.started.set_exception(WorkflowCancelled())
                interrupted = True
        # Only shielded work (compensations) in progress: the request waits for it.
        self._cancel_deferred = not interrupted
        self._settle()

    def _apply(self, cmd: Command, entry: JournalEntry, event: Event | None = None) -> None:
        """Feed ``entry`` (``event``: its decoded event, if at hand) to ``cmd``."""
        if entry.type not in ALLOWED[cmd.id.kind]:
            raise self._mismatch(entry, requested=cmd.id.describe())
        event = check_args_hash(self.run_id, cmd, entry, self._carried_hashes, event)
        apply_event(cmd, entry, event, self._resolve)

    def _resolve(self, cmd: Command) -> asyncio.Future[Any]:
        """Take ``cmd`` off the pending commands; return the future to resolve."""
        del self._pending[cmd.key]
        if cmd.future.done():  # cancelled by the workflow itself; the outcome is moot
            cmd.future = self._loop.create_future()
        return cmd.future

    def _abort(self, err: BaseException) -> None:
        if self._fatal is None:
            self._fatal = err
        raise _Abort()

    def _mismatch(self, entry: JournalEntry, requested: str | None = None) -> NondeterminismError:
        recorded = describe_event(entry)
        if requested is None:
            waiting = [c.id.describe() for c in self.pending()]
            if waiting:
                requested = ", ".join(waiting)
            elif self._main is not None and self._main.done():
                requested = "the workflow to return"
            else:
                requested = "nothing (it is blocked on something that is not a Keel command)"
        return NondeterminismError(self.run_id, entry.seq, recorded, requested)
