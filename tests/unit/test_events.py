"""Journal vocabulary: event groups and command identity."""

from __future__ import annotations

import pytest

from keel.core.events import (
    CONTROL_EVENTS,
    IMMEDIATE_KINDS,
    PROGRESS,
    RESOLVING,
    RUN_EVENTS,
    CommandId,
    CommandKind,
    EventType,
)


def test_event_groups_partition_the_event_types() -> None:
    groups = [RESOLVING, PROGRESS, RUN_EVENTS, CONTROL_EVENTS]
    assert set().union(*groups) == set(EventType)
    assert sum(len(g) for g in groups) == len(EventType)  # no event in two groups


def test_immediate_kinds() -> None:
    immediate = {CommandKind.NOW, CommandKind.UUID4, CommandKind.RANDOM, CommandKind.PATCH}
    assert immediate == IMMEDIATE_KINDS


@pytest.mark.parametrize(
    "cid",
    [
        CommandId(CommandKind.STEP, "charge", 0),
        CommandId(CommandKind.SLEEP, "sleep", 12),
        CommandId(CommandKind.SIGNAL, "approved", 3),
        CommandId(CommandKind.SIDE_EFFECT, "", 0),
        # Names may contain the separators: ':' after the kind, '#' before the ordinal.
        CommandId(CommandKind.STEP, "billing:charge#v2", 7),
        CommandId(CommandKind.STEP, "módulo.paso with spaces", 1_000_000),
        *(CommandId(kind, "x", 1) for kind in CommandKind),
    ],
    ids=str,
)
def test_str_parse_round_trip(cid: CommandId) -> None:
    text = str(cid)
    assert CommandId.parse(text) == cid
    assert str(CommandId.parse(text)) == text


def test_str_and_describe_formats() -> None:
    cid = CommandId(CommandKind.STEP, "charge", 2)
    assert str(cid) == "step:charge#2"
    assert cid.describe() == "step 'charge' (#2)"
    parsed = CommandId.parse("uuid4:uuid4#0")
    assert parsed.kind is CommandKind.UUID4


def test_command_ids_are_hashable_values() -> None:
    a = CommandId(CommandKind.STEP, "a", 0)
    assert a == CommandId(CommandKind.STEP, "a", 0)
    assert len({a, CommandId(CommandKind.STEP, "a", 0), CommandId(CommandKind.STEP, "a", 1)}) == 2
    with pytest.raises(AttributeError):
        a.ordinal = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "step",
        "step:charge",  # no ordinal
        "charge#1",  # no kind
        "#1",
        ":charge#1",  # empty kind
        "bogus:charge#1",  # unknown kind
        "STEP:charge#1",  # kinds are lower case
        "step:charge#",
        "step:charge#x",
        "step:charge#1.5",
    ],
)
def test_parse_rejects_malformed_input(text: str) -> None:
    with pytest.raises(ValueError):
        CommandId.parse(text)


@pytest.mark.parametrize("text", ["step:charge#-1", "step:charge# 1", "step:charge#1_0"])
def test_parse_rejects_non_canonical_ordinals(text: str) -> None:
    with pytest.raises(ValueError):
        CommandId.parse(text)
