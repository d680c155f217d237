"""Run states and the one table of allowed transitions."""

from __future__ import annotations

from enum import StrEnum


class RunState(StrEnum):
    """Lifecycle of a run."""

    PENDING = "pending"  # created, never claimed
    RUNNING = "running"  # a worker holds its lease and executes it
    SUSPENDED = "suspended"  # waiting for a timer, signal or retry; no lease held
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    CONTINUED = "continued"  # ended by continue-as-new; ``continued_to`` names its successor
    TERMINATED = "terminated"  # ended at once by an operator: no cleanup code ran

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {
        RunState.COMPLETED,
        RunState.FAILED,
        RunState.CANCELLED,
        RunState.CONTINUED,
        RunState.TERMINATED,
    }
)

#: States of a run that has not ended.
LIVE_STATES = frozenset({RunState.PENDING, RunState.RUNNING, RunState.SUSPENDED})

#: Every allowed transition. ``running -> running`` is a lease taken over from an
#: expired holder; ``pending/suspended -> cancelled`` (and ``running -> cancelled``
#: when the holder's lease expired) is a cancel with no worker. Every live state
#: may move to ``terminated`` (an operator's terminate, which also fences off a
#: holder); ``running -> suspended`` is also an operator's resume taking the
#: lease away. The stores refuse anything else (``keel.store._checks.check_move``).
TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.PENDING: frozenset({RunState.RUNNING, RunState.CANCELLED, RunState.TERMINATED}),
    RunState.RUNNING: frozenset(
        {
            RunState.RUNNING,
            RunState.SUSPENDED,  # also how a worker releases a run it holds (drain, parking)
            RunState.COMPLETED,
            RunState.FAILED,
            RunState.CANCELLED,
            RunState.CONTINUED,  # continue-as-new: a successor run takes over
            RunState.TERMINATED,
        }
    ),
    RunState.SUSPENDED: frozenset({RunState.RUNNING, RunState.CANCELLED, RunState.TERMINATED}),
    RunState.COMPLETED: frozenset(),
    RunState.FAILED: frozenset(),
    RunState.CANCELLED: frozenset(),
    RunState.CONTINUED: frozenset(),
    RunState.TERMINATED: frozenset(),
}


def can_transition(src: RunState, dst: RunState) -> bool:
    """Whether a run may move from ``src`` to ``dst``."""
    return dst in TRANSITIONS[src]


def check_transition(src: RunState, dst: RunState) -> None:
    """Raise ``ValueError`` if ``src -> dst`` is not in :data:`TRANSITIONS`."""
    if not can_transition(src, dst):
        raise ValueError(f"illegal run state transition {src.value} -> {dst.value}")
