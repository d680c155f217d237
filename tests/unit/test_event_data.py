"""Typed event data: every shape the writers produce, byte for byte, and formats.

The expected bytes below are the data Keel wrote before events were typed (the
``envelope(**fields)`` calls of each writer, in their key order), so a stored
journal, an exported one and every arguments hash stay as they were.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from keel.core import events as ev
from keel.core.events import UNSET, EventType

ERR = {"type": "builtins.ValueError", "message": "boom", "traceback": "Traceback ..."}
ERR_JSON = b'{"type":"builtins.ValueError","message":"boom","traceback":"Traceback ..."}'
R = msgspec.Raw

# (id, event, expected data): one row per shape a writer produces.
SHAPES: list[tuple[str, ev.Event, bytes]] = [
    (
        "run_started/client",
        ev.run_started("wf", "v1", b'{"x":1}'),
        b'{"workflow":"wf","version":"v1","input":{"x":1}}',
    ),
    (
        "run_started/child",
        ev.run_started("kid", "v2", b"[1]", parent_run_id="p"),
        b'{"workflow":"kid","version":"v2","input":[1],"parent_run_id":"p"}',
    ),
    (
        "run_started/successor",
        ev.run_started(
            "wf", "v3", b"[2]", chain_id="c", generation=2, continued_from="c/continue:1"
        ),
        b'{"workflow":"wf","version":"v3","input":[2],"chain_id":"c","generation":2,'
        b'"continued_from":"c/continue:1","parent_run_id":null}',
    ),
    (
        "run_started/successor-of-a-child",
        ev.run_started(
            "wf", "v3", b"[]", chain_id="c", generation=1, continued_from="c", parent_run_id="p"
        ),
        b'{"workflow":"wf","version":"v3","input":[],"chain_id":"c","generation":1,'
        b'"continued_from":"c","parent_run_id":"p"}',
    ),
    (
        "run_started/schedule",
        ev.run_started("wf", "v1", b"[]", schedule="nightly", scheduled_at=1700000000.0),
        b'{"workflow":"wf","version":"v1","input":[],"schedule":"nightly",'
        b'"scheduled_at":1700000000.0}',
    ),
    (
        "run_started/fork",
        ev.run_started("wf", "v2", b"[]", forked_from="r1", fork_seq=4),
        b'{"workflow":"wf","version":"v2","input":[],"forked_from":"r1","fork_seq":4}',
    ),
    (
        "step_completed/local",
        ev.StepCompleted(result=R(b'"ok"'), args_hash="h", attempt=1),
        b'{"result":"ok","args_hash":"h","attempt":1}',
    ),
    (
        "step_completed/local-reused",
        ev.StepCompleted(
            result=R(b"1"), args_hash="h", attempt=2, reused=True, idempotency_key="k"
        ),
        b'{"result":1,"args_hash":"h","attempt":2,"reused":true,"idempotency_key":"k"}',
    ),
    (
        "step_completed/dispatched",
        ev.StepCompleted(result=R(b"null"), args_hash="h", attempt=3, task_id=7),
        b'{"result":null,"args_hash":"h","attempt":3,"task_id":7}',
    ),
    (
        "step_completed/dispatched-reused",
        ev.StepCompleted(
            result=R(b"[1]"), args_hash="h", attempt=1, task_id=7, reused=True, idempotency_key="k"
        ),
        b'{"result":[1],"args_hash":"h","attempt":1,"task_id":7,"reused":true,'
        b'"idempotency_key":"k"}',
    ),
    (
        "step_attempt_failed",
        ev.StepAttemptFailed(attempt=1, error=ERR, retry_at=1700000000.25, args_hash="h"),
        b'{"attempt":1,"error":' + ERR_JSON + b',"retry_at":1700000000.25,"args_hash":"h"}',
    ),
    (
        "step_failed/local",
        ev.StepFailed(attempts=3, error=ERR, args_hash="h"),
        b'{"attempts":3,"error":' + ERR_JSON + b',"args_hash":"h"}',
    ),
    (
        "step_failed/side-effect",  # side_effect(fn) has no arguments: its hash is null
        ev.StepFailed(attempts=1, error=ERR, args_hash=None),
        b'{"attempts":1,"error":' + ERR_JSON + b',"args_hash":null}',
    ),
    (
        "step_failed/dispatched",
        ev.StepFailed(attempts=2, error={"type": "t", "message": "m"}, args_hash="h", task_id=9),
        b'{"attempts":2,"error":{"type":"t","message":"m"},"args_hash":"h","task_id":9}',
    ),
    (
        "step_dispatched",
        ev.StepDispatched(queue="gpu", priority=5, args_hash="h"),
        b'{"queue":"gpu","priority":5,"args_hash":"h"}',
    ),
    (
        "timer_started",
        ev.TimerStarted(duration=1.5, fire_at=1700000001.5),
        b'{"duration":1.5,"fire_at":1700000001.5}',
    ),
    (
        "timer_started/int-seconds",  # sleep(2): the duration as the workflow gave it
        ev.TimerStarted(duration=2, fire_at=1700000002.0),
        b'{"duration":2,"fire_at":1700000002.0}',
    ),
    ("timer_fired", ev.TimerFired(), b"{}"),
    (
        "signal_awaited",
        ev.SignalAwaited(name="approve", timeout=60, deadline=1700000060.0),
        b'{"name":"approve","timeout":60,"deadline":1700000060.0}',
    ),
    (
        "signal_awaited/no-timeout",
        ev.SignalAwaited(name="approve", timeout=None, deadline=None),
        b'{"name":"approve","timeout":null,"deadline":null}',
    ),
    (
        "signal_received",
        ev.SignalReceived(name="approve", payload=R(b'{"by":"ana"}'), signal_id=4),
        b'{"name":"approve","payload":{"by":"ana"},"signal_id":4}',
    ),
    (
        "signal_timed_out",
        ev.SignalTimedOut(name="approve", timeout=0.05),
        b'{"name":"approve","timeout":0.05}',
    ),
    ("side_effect/immediate", ev.SideEffect(value=R(b"0.5")), b'{"value":0.5}'),
    (
        "side_effect/worker",
        ev.SideEffect(value=R(b'"x"'), args_hash=None, attempt=1),
        b'{"value":"x","args_hash":null,"attempt":1}',
    ),
    ("patched", ev.Patched(patch="bonus"), b'{"patch":"bonus"}'),
    ("cancel_requested", ev.CancelRequested(), b"{}"),
    (
        "child_started",
        ev.ChildStarted(child_run_id="p/k", workflow="kid", parent_close="cancel", args_hash="h"),
        b'{"child_run_id":"p/k","workflow":"kid","parent_close":"cancel","args_hash":"h"}',
    ),
    (
        "child_completed",
        ev.ChildCompleted(child_run_id="p/k", result=R(b"7")),
        b'{"child_run_id":"p/k","result":7}',
    ),
    (
        "child_failed/refused",
        ev.ChildFailed(
            child_run_id="p/k",
            started=False,
            error={"type": "keel.errors.RunExistsError", "message": "taken", "traceback": ""},
            args_hash="h",
        ),
        b'{"child_run_id":"p/k","started":false,"error":{"type":"keel.errors.RunExistsError",'
        b'"message":"taken","traceback":""},"args_hash":"h"}',
    ),
    (
        "child_failed/outcome",
        ev.ChildFailed(child_run_id="p/k", error=ERR),
        b'{"child_run_id":"p/k","error":' + ERR_JSON + b"}",
    ),
    ("child_cancelled", ev.ChildCancelled(child_run_id="p/k"), b'{"child_run_id":"p/k"}'),
    ("run_completed", ev.RunCompleted(result=R(b'{"a":[1]}')), b'{"result":{"a":[1]}}'),
    ("run_failed", ev.RunFailed(error=ERR), b'{"error":' + ERR_JSON + b"}"),
    ("run_cancelled", ev.RunCancelled(reason="cancel requested"), b'{"reason":"cancel requested"}'),
    (
        "run_terminated",
        ev.RunTerminated(reason="stuck"),
        b'{"reason":"stuck"}',
    ),
    (
        "run_continued",
        ev.RunContinued(continued_to="c/continue:1", version="v1", input=R(b"[3]")),
        b'{"continued_to":"c/continue:1","version":"v1","input":[3]}',
    ),
]


def test_every_event_type_has_a_struct_and_a_shape_here() -> None:
    assert set(ev.STRUCTS) == set(EventType)
    assert all(cls.TYPE is t for t, cls in ev.STRUCTS.items())
    assert {e.TYPE for _, e, _ in SHAPES} == set(EventType)


@pytest.mark.parametrize(("event", "data"), [s[1:] for s in SHAPES], ids=[s[0] for s in SHAPES])
def test_writer_shapes_encode_to_the_bytes_written_before_and_round_trip(
    event: ev.Event, data: bytes
) -> None:
    assert ev.encode(event) == (event.TYPE, data)
    decoded = ev.decode(event.TYPE, data)
    assert type(decoded) is type(event) and decoded == event
    assert ev.encode_data(decoded) == data
    assert ev.read(type(event), data) == decoded


def test_user_values_stay_raw_json() -> None:
    done = ev.decode(EventType.STEP_COMPLETED, b'{"result":{"b": 1, "a": [1.50]},"attempt":1}')
    assert isinstance(done, ev.StepCompleted)
    assert bytes(done.result) == b'{"b": 1, "a": [1.50]}'  # untouched, not re-encoded


def test_missing_fields_read_as_the_string_keyed_readers_did() -> None:
    # Data lacking fields (hand-made journals, tests) decodes with neutral defaults.
    done = ev.decode(EventType.STEP_COMPLETED, b"{}")
    assert isinstance(done, ev.StepCompleted)
    assert (bytes(done.result), done.args_hash, done.attempt) == (b"null", None, 0)
    failed = ev.decode(EventType.STEP_FAILED, b'{"error":{}}')
    assert isinstance(failed, ev.StepFailed) and failed.attempts is UNSET
    assert ev.recorded_hash(ev.decode(EventType.CHILD_FAILED, b'{"child_run_id":"x"}')) is None
    assert ev.recorded_hash(ev.SideEffect(value=R(b"1"), args_hash="h")) is None  # not checked


def test_run_failed_gives_the_event_and_the_same_error_json() -> None:
    event, error = ev.run_failed(ValueError("boom"))
    assert ev.encode_data(event) == b'{"error":' + error + b"}"
    assert msgspec.json.decode(error)["type"] == "builtins.ValueError"


def test_plain_is_the_data_as_json_values() -> None:
    data = b'{"result":[1,2],"args_hash":"h","attempt":1}'
    assert ev.plain("step_completed", data) == {"result": [1, 2], "args_hash": "h", "attempt": 1}
    assert ev.plain("from_a_newer_keel", b'{"x":1}') == {"x": 1}  # shown as stored


@pytest.mark.parametrize(
    ("type_", "data"),
    [
        (EventType.STEP_COMPLETED, b'{"result":1,"attempt":"one"}'),
        (EventType.RUN_FAILED, b'{"error":"not an object"}'),
        (EventType.TIMER_FIRED, b"[]"),
        (EventType.TIMER_FIRED, b"{"),
    ],
)
def test_data_that_does_not_fit_its_type_is_refused(type_: EventType, data: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        ev.decode(type_, data)


# --- formats --------------------------------------------------------------------------------
# No event type has changed shape yet (every event ever written is format 1), so
# these tests give one a hypothetical format 2 to check the machinery: format 2
# of step_attempt_failed would state the delay instead of the due time, with an
# upcaster that keeps format 1 data readable.


def _to_format_2(fields: dict[str, Any]) -> dict[str, Any]:
    due = msgspec.json.decode(fields.pop("retry_at"))
    fields["retry_in"] = due - 1700000000.0
    return fields


class _AttemptFailedV2(ev.StepAttemptFailed, frozen=True, kw_only=True, gc=False):
    format: int | msgspec.UnsetType = 2
    retry_in: float = 0.0


def test_unchanged_types_refuse_data_that_names_a_format() -> None:
    # Format 1 writes no format key: a key is data from a newer Keel, never misread.
    with pytest.raises(msgspec.DecodeError, match="format 2"):
        ev.decode(EventType.TIMER_FIRED, b'{"format":2}')


def test_a_changed_type_upcasts_older_data_at_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    t = EventType.STEP_ATTEMPT_FAILED
    monkeypatch.setitem(ev.FORMATS, t, 2)
    monkeypatch.setitem(ev.UPCASTERS, (t, 1), _to_format_2)
    monkeypatch.setitem(ev.STRUCTS, t, _AttemptFailedV2)
    monkeypatch.setitem(ev._decoders, _AttemptFailedV2, msgspec.json.Decoder(_AttemptFailedV2))

    old = b'{"attempt":1,"error":{},"retry_at":1700000002.5,"args_hash":"h"}'  # format 1
    upcast = ev.decode(t, old)
    assert isinstance(upcast, _AttemptFailedV2)
    assert (upcast.format, upcast.retry_in, upcast.attempt, upcast.args_hash) == (2, 2.5, 1, "h")

    new = ev.encode_data(_AttemptFailedV2(attempt=2, retry_in=1.0, args_hash="h"))
    assert new.startswith(b'{"format":2,"attempt":2,')  # the format is written, first
    current = ev.decode(t, new)
    assert isinstance(current, _AttemptFailedV2) and current.retry_in == 1.0

    with pytest.raises(msgspec.DecodeError, match="format 3"):
        ev.decode(t, b'{"format":3,"attempt":1}')


def test_every_format_has_its_upcasters() -> None:
    for t, current in ev.FORMATS.items():
        assert current >= 2
        assert all((t, n) in ev.UPCASTERS for n in range(1, current))


def test_plain_shows_data_that_does_not_fit_as_stored() -> None:
    odd = b'{"attempt":"one","result":1}'
    assert ev.plain("step_completed", odd) == {"attempt": "one", "result": 1}
