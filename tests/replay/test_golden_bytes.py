"""The golden journals through the typed events: every event decodes, and encodes
again to the very bytes Keel wrote for it.

An exported journal keeps each event's data with its keys sorted, so the bytes
the writer stored are rebuilt here from the key order each writer has always
used (the table below is that order, not the structs': it is the oracle).
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from keel.core import events as ev
from keel.replay import load_journal

GOLDEN = Path(__file__).parent / "golden"

# type -> the key orders its writers produce (several when writers differ).
WRITER_ORDERS: dict[str, list[tuple[str, ...]]] = {
    "run_started": [
        ("workflow", "version", "input"),
        ("workflow", "version", "input", "parent_run_id"),
        (
            "workflow",
            "version",
            "input",
            "chain_id",
            "generation",
            "continued_from",
            "parent_run_id",
        ),
        ("workflow", "version", "input", "schedule", "scheduled_at"),
        ("workflow", "version", "input", "forked_from", "fork_seq"),
    ],
    "step_completed": [
        ("result", "args_hash", "attempt"),
        ("result", "args_hash", "attempt", "reused", "idempotency_key"),
        ("result", "args_hash", "attempt", "task_id"),
        ("result", "args_hash", "attempt", "task_id", "reused", "idempotency_key"),
    ],
    "step_attempt_failed": [("attempt", "error", "retry_at", "args_hash")],
    "step_failed": [
        ("attempts", "error", "args_hash"),
        ("attempts", "error", "args_hash", "task_id"),
    ],
    "step_dispatched": [("queue", "priority", "args_hash")],
    "timer_started": [("duration", "fire_at")],
    "timer_fired": [()],
    "signal_awaited": [("name", "timeout", "deadline")],
    "signal_received": [("name", "payload", "signal_id")],
    "signal_timed_out": [("name", "timeout")],
    "side_effect": [("value",), ("value", "args_hash", "attempt")],
    "patched": [("patch",)],
    "cancel_requested": [()],
    "child_started": [("child_run_id", "workflow", "parent_close", "args_hash")],
    "child_completed": [("child_run_id", "result")],
    "child_failed": [
        ("child_run_id", "started", "error", "args_hash"),
        ("child_run_id", "error"),
    ],
    "child_cancelled": [("child_run_id",)],
    "run_completed": [("result",)],
    "run_failed": [("error",)],
    "run_cancelled": [("reason",)],
    "run_continued": [("continued_to", "version", "input")],
    "run_terminated": [("reason",)],
}

_fields = msgspec.json.Decoder(dict[str, msgspec.Raw])
FILES = sorted(GOLDEN.glob("*.json"))


def _as_written(type_: str, data: bytes) -> bytes:
    """``data`` with its keys in the order the writer of this shape uses."""
    fields = _fields.decode(data)
    [order] = [o for o in WRITER_ORDERS[type_] if set(o) == set(fields)]
    return msgspec.json.encode({key: fields[key] for key in order})


def test_the_table_covers_every_event_type() -> None:
    assert set(WRITER_ORDERS) == {t.value for t in ev.EventType}


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_every_golden_event_encodes_back_to_its_written_bytes(path: Path) -> None:
    journal = load_journal(path)
    for entry in journal:
        event = ev.decode(entry.type, entry.data)
        assert type(event) is ev.STRUCTS[entry.type]
        written = _as_written(entry.type.value, entry.data)
        assert ev.encode(event) == (entry.type, written), f"{path.name} seq {entry.seq}"
        assert ev.decode(entry.type, written) == event


def test_the_golden_journals_hold_many_event_types() -> None:
    seen = {e.type for path in FILES for e in load_journal(path)}
    assert len(seen) >= 12  # what the golden scenarios record; the rest: test_event_data
