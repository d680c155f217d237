"""What step bodies use to leave evidence outside the engine.

Each execution appends one line ``<run_id> <step> <attempt> <pid> <phase>`` to
``$KEEL_ACC_DIR/executions.log`` with a single ``O_APPEND`` write (atomic for
lines this short), so tests count executions without trusting the journal.
A gate is a file the test creates to let a blocked step go on.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import keel

DIR_ENV = "KEEL_ACC_DIR"
LOG_NAME = "executions.log"


def acc_dir() -> Path:
    return Path(os.environ[DIR_ENV])


def record(phase: str = "start") -> None:
    """Log one execution phase of the step running in this context."""
    info = keel.current_step()
    assert info is not None, "record() must be called from a step body"
    line = f"{info.run_id} {info.step} {info.attempt} {os.getpid()} {phase}\n"
    fd = os.open(acc_dir() / LOG_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def wait_gate(name: str, timeout: float = 50.0) -> None:
    """Block until the test creates ``gate-<name>`` (the test kills us meanwhile)."""
    path = acc_dir() / f"gate-{name}"
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {name!r} was never opened")
        time.sleep(0.01)
