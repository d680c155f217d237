"""Run states: the transition table is the only source of truth."""

from __future__ import annotations

import itertools

import pytest

from keel.core.states import (
    TERMINAL_STATES,
    TRANSITIONS,
    RunState,
    can_transition,
    check_transition,
)

ALLOWED = sorted((src, dst) for src, targets in TRANSITIONS.items() for dst in targets)
FORBIDDEN = sorted(
    (src, dst) for src, dst in itertools.product(RunState, repeat=2) if dst not in TRANSITIONS[src]
)


def test_every_state_has_an_entry() -> None:
    assert set(TRANSITIONS) == set(RunState)


@pytest.mark.parametrize(("src", "dst"), ALLOWED)
def test_allowed_transitions(src: RunState, dst: RunState) -> None:
    assert can_transition(src, dst)
    check_transition(src, dst)


@pytest.mark.parametrize(("src", "dst"), FORBIDDEN)
def test_everything_else_is_rejected(src: RunState, dst: RunState) -> None:
    assert not can_transition(src, dst)
    with pytest.raises(ValueError, match=f"illegal run state transition {src} -> {dst}$"):
        check_transition(src, dst)


def test_the_table_covers_the_lifecycle() -> None:
    # Spot-check the transitions the engine relies on, so an accidental edit of
    # the table fails here rather than in a worker.
    assert can_transition(RunState.PENDING, RunState.RUNNING)
    assert can_transition(RunState.RUNNING, RunState.SUSPENDED)
    assert can_transition(RunState.SUSPENDED, RunState.RUNNING)
    assert can_transition(RunState.RUNNING, RunState.RUNNING)  # lease takeover
    assert can_transition(RunState.PENDING, RunState.CANCELLED)
    assert not can_transition(RunState.PENDING, RunState.COMPLETED)
    assert not can_transition(RunState.SUSPENDED, RunState.COMPLETED)
    assert can_transition(RunState.RUNNING, RunState.CONTINUED)  # continue-as-new
    assert not can_transition(RunState.SUSPENDED, RunState.CONTINUED)


@pytest.mark.parametrize("state", sorted(TERMINAL_STATES))
def test_terminal_states_have_no_exits(state: RunState) -> None:
    assert state.is_terminal
    assert TRANSITIONS[state] == frozenset()
    assert not any(can_transition(state, dst) for dst in RunState)


def test_terminal_states() -> None:
    assert {
        RunState.COMPLETED,
        RunState.FAILED,
        RunState.CANCELLED,
        RunState.CONTINUED,
    } == TERMINAL_STATES
    assert {s for s in RunState if not s.is_terminal} == {
        RunState.PENDING,
        RunState.RUNNING,
        RunState.SUSPENDED,
    }


def test_every_live_state_can_reach_a_terminal_state() -> None:
    for state in RunState:
        seen, frontier = {state}, [state]
        while frontier:
            for nxt in TRANSITIONS[frontier.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        assert seen & TERMINAL_STATES, state


def test_states_are_strings_for_storage() -> None:
    assert RunState("suspended") is RunState.SUSPENDED
    assert [s.value for s in RunState] == [
        "pending",
        "running",
        "suspended",
        "completed",
        "failed",
        "cancelled",
        "continued",
    ]
