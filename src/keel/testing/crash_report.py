"""What :func:`keel.testing.crash_every_write` found: typed, and readable as text."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from keel.testing.crash_store import When, Write

__all__ = ["CrashFailure", "CrashPoint", "CrashReport", "RunOutcome", "StepExecution"]

Check = Literal["result", "rerun", "replay", "invariant", "unfinished"]


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """How a run (its continue-as-new chain) ended: ``state`` and the decoded
    JSON ``result``, or the error's type and message; ``unfinished`` if it had
    not ended in time."""

    state: str
    result: Any = None
    error_type: str | None = None
    error_message: str | None = None

    def same_as(self, other: RunOutcome) -> bool:
        """The same end: state and result, or state and error type and message
        (tracebacks differ between workers)."""
        return (self.state, self.result, self.error_type, self.error_message) == (
            other.state,
            other.result,
            other.error_type,
            other.error_message,
        )

    def __str__(self) -> str:
        if self.state == "completed":
            return f"completed with {self.result!r}"
        if self.error_type is not None:
            return f"{self.state}: {self.error_type}: {self.error_message}"
        return self.state


@dataclass(frozen=True, slots=True)
class StepExecution:
    """One time a step's body ran.

    ``number`` counts the executions of this step command (one call of a
    step in one run) from 1; ``attempt`` is Keel's attempt number: a retry
    after a journaled failure is the next attempt, while a step run again
    because its end was not journaled runs the same attempt again
    (``repeat``).
    ``worker`` is ``"first"`` (the worker that crashed) or ``"second"`` (the one
    that took over). ``journaled_at`` is the write that had already journaled
    this command's end (or this attempt's failure) when the body started:
    Keel promises that never happens.
    """

    step: str
    run_id: str
    command: str
    attempt: int
    number: int
    worker: str
    repeat: bool = False
    journaled_at: int | None = None

    def __str__(self) -> str:
        return (
            f"step {self.step!r} attempt {self.attempt} (execution {self.number} of "
            f"{self.command} in run {self.run_id}, by the {self.worker} worker)"
        )


@dataclass(frozen=True, slots=True)
class CrashFailure:
    """One broken promise: at crash point (``write``, ``when``), or in the
    uncrashed run when ``write`` is ``None``.

    ``check`` says which: ``result`` (ended differently from the uncrashed
    run), ``rerun`` (a step ran again after its end was journaled),
    ``replay`` (the final journal does not replay), ``invariant`` (the
    user's invariant failed, after the step execution named by ``step``,
    ``attempt`` and ``execution``, or at the end when they are ``None``),
    ``unfinished`` (the run did not end).
    """

    write: int | None
    when: When | None
    check: Check
    message: str
    step: str | None = None
    attempt: int | None = None
    execution: int | None = None

    @property
    def where(self) -> str:
        if self.write is None:
            return "uncrashed run"
        return f"crash {self.when} write {self.write}"

    def __str__(self) -> str:
        return f"{self.where}: {self.check}: {self.message}"


@dataclass(frozen=True, slots=True)
class CrashPoint:
    """One crash and its recovery.

    ``crashed_at`` is the write the first worker was making when it crashed
    (``None``: it finished the run with fewer writes this time, so there was
    nothing to crash at). ``executions`` counts each step's executions (by
    step name, retries included), ``repeats`` lists the executions that ran
    an attempt again: the expected at-least-once re-runs of steps whose end
    was not yet journaled, and any that broke the promise (``journaled_at``
    set, also in ``failures``).
    """

    write: int
    when: When
    crashed_at: Write | None
    outcome: RunOutcome
    executions: dict[str, int]
    repeats: list[StepExecution]
    failures: list[CrashFailure]
    #: Every step execution of this run, in the order they started.
    step_executions: list[StepExecution] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"crash {self.when} write {self.write}"


@dataclass
class CrashReport:
    """Everything one :func:`~keel.testing.crash_every_write` call found.

    ``writes`` are the uncrashed run's writes in order (see
    :data:`keel.testing.crash_store.WRITES` for what counts), ``outcome`` how
    it ended and ``executions`` how often each step's body ran in it;
    ``points`` has one :class:`CrashPoint` per write and side (before, after).
    """

    workflow: str
    store: str
    outcome: RunOutcome
    writes: list[Write]
    executions: dict[str, int]
    points: list[CrashPoint] = field(default_factory=list)
    uncrashed_failures: list[CrashFailure] = field(default_factory=list)
    #: Every step execution of the uncrashed run, in the order they started.
    step_executions: list[StepExecution] = field(default_factory=list)

    @property
    def failures(self) -> list[CrashFailure]:
        """Every failure, the uncrashed run's first, then by crash point."""
        return [*self.uncrashed_failures, *(f for p in self.points for f in p.failures)]

    @property
    def passed(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        n = len(self.failures)
        return (
            f"crash_every_write({self.workflow}) on {self.store}: {len(self.writes)} writes, "
            f"{len(self.points)} crash points, {n} failure{'s' if n != 1 else ''}"
        )

    def format(self) -> str:
        """The whole report as text: failures first, then what ran where."""
        lines = [self.summary(), f"uncrashed run: {self.outcome}"]
        lines.append("step executions (uncrashed): " + _counts(self.executions))
        if self.failures:
            lines.append("FAILURES:")
            lines += [f"  {f}" for f in self.failures]
        lines.append("writes of the uncrashed run:")
        lines += [f"  {w.index:>3}  {w}" for w in self.writes]
        repeats = [p for p in self.points if p.repeats]
        if repeats:
            lines.append("steps that ran again after a crash (at-least-once):")
            for point in repeats:
                again = Counter(e.step for e in point.repeats)
                lines.append(f"  {point.name}: " + _counts(dict(again), suffix=" more"))
        missed = [p.name for p in self.points if p.crashed_at is None]
        if missed:
            lines.append("not reached (the run made fewer writes this time): " + ", ".join(missed))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()

    def assert_passed(self) -> None:
        """Raise ``AssertionError`` with :meth:`format` if any check failed."""
        if self.failures:
            raise AssertionError(self.format())


def _counts(counts: dict[str, int], suffix: str = "") -> str:
    return ", ".join(f"{name} x{n}{suffix}" for name, n in sorted(counts.items())) or "none"
