"""The JSON log formatter: one object per record, run fields, passwords masked."""

from __future__ import annotations

import json
import logging

from keel.observe.logs import JsonFormatter, run_fields

SECRET = "hunter2pw"


def _record(msg: str, *args: object, extra: dict[str, object] | None = None) -> logging.LogRecord:
    logger = logging.getLogger("keel.worker")
    record = logger.makeRecord("keel.worker", logging.WARNING, __file__, 1, msg, args, None)
    for key, value in (extra or {}).items():
        setattr(record, key, value)
    return record


def test_a_record_is_one_json_object_with_its_run_fields() -> None:
    record = _record(
        "run %s: step %r attempt %d failed", "r1", "charge", 2,
        extra=run_fields("r1", "orders", "charge", 2),
    )  # fmt: skip
    line = JsonFormatter().format(record)
    assert "\n" not in line
    out = json.loads(line)
    assert out["level"] == "WARNING" and out["logger"] == "keel.worker"
    assert out["message"] == "run r1: step 'charge' attempt 2 failed"
    assert (out["run_id"], out["workflow"], out["step"], out["attempt"]) == (
        "r1",
        "orders",
        "charge",
        2,
    )
    assert out["time"].endswith("Z")


def test_fields_a_record_lacks_are_left_out() -> None:
    out = json.loads(JsonFormatter().format(_record("plain")))
    assert set(out) == {"time", "level", "logger", "message"}
    assert run_fields("r", "wf") == {"run_id": "r", "workflow": "wf"}


def test_passwords_are_masked_in_messages_and_tracebacks() -> None:
    url = f"postgresql://app:{SECRET}@db.example/keel"
    try:
        raise ConnectionError(f"could not reach {url}")
    except ConnectionError:
        import sys

        record = _record("store %s failed", url)
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert SECRET not in line
    out = json.loads(line)
    assert "postgresql://app:***@db.example/keel" in out["message"]
    assert "ConnectionError" in out["exception"]
