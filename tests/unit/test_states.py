"""Run states: the transition table is the documented lifecycle, and the stores
change states along it and nowhere else."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from keel.core.states import (
    TERMINAL_STATES,
    TRANSITIONS,
    RunState,
    can_transition,
    check_transition,
)
from keel.errors import IllegalTransitionError
from keel.store._checks import check_move
from keel.store.memory import MemoryStore
from keel.testing.conformance_turns import walk_lifecycle

#: The lifecycle as the README tells it ("pending → running → suspended ⇄ running →
#: completed | failed | cancelled | continued | terminated", cancelling, lease takeover), written
#: out here by hand so that an edit of the table alone fails.
DOCUMENTED = {
    ("pending", "running"),  # a worker claims it
    ("pending", "cancelled"),  # cancelled before any worker took it
    ("running", "running"),  # a worker takes over an expired lease
    ("running", "suspended"),  # waits (timer, signal, step, child), or is released
    ("running", "completed"),
    ("running", "failed"),
    ("running", "cancelled"),  # its workflow handled the cancel, or a lost holder's run
    ("running", "continued"),  # continue-as-new
    ("suspended", "running"),  # woken and claimed
    ("suspended", "cancelled"),  # cancelled while no worker holds it
    ("pending", "terminated"),  # an operator's terminate, from any live state
    ("running", "terminated"),
    ("suspended", "terminated"),
}
TABLE = {(src.value, dst.value) for src, targets in TRANSITIONS.items() for dst in targets}

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


def test_the_table_is_the_documented_lifecycle() -> None:
    assert sorted(TABLE - DOCUMENTED) == [], "the table allows what the docs do not describe"
    assert sorted(DOCUMENTED - TABLE) == [], "the table lacks what the docs describe"


def test_the_store_api_makes_every_transition_of_the_table_and_no_other() -> None:
    """The conformance walk drives a store through the whole lifecycle: each change
    it sees is in the table, and each entry of the table is a change a store makes."""

    async def walk() -> set[tuple[str, str]]:
        store = MemoryStore()
        await store.open()
        try:
            return {(src.value, dst.value) for src, dst in await walk_lifecycle(store)}
        finally:
            await store.close()

    assert asyncio.run(walk()) == TABLE


@pytest.mark.parametrize(("src", "dst"), FORBIDDEN)
def test_the_stores_check_refuses_everything_else(src: RunState, dst: RunState) -> None:
    with pytest.raises(IllegalTransitionError, match=f"from {src} to {dst}$"):
        check_move("r1", src, dst)


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
        RunState.TERMINATED,
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
        "terminated",
    ]
