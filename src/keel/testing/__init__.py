"""Keel's test kit for users.

- :func:`crash_every_write` / :func:`assert_survives_crashes`: does a workflow
  survive a worker crash before and after each of its writes?
- :func:`mock_step`: replace a step's body in a test.
- :func:`assert_replays`, :func:`assert_golden`, :func:`golden_journals`,
  :func:`replay_golden_folder`: replay recorded journals against the code.

:mod:`keel.testing.conformance` holds the store conformance suite (it needs
pytest, so it is not imported here).
"""

from keel.testing.crash_report import (
    CrashFailure,
    CrashPoint,
    CrashReport,
    RunOutcome,
    StepExecution,
)
from keel.testing.crash_store import Write
from keel.testing.crashes import assert_survives_crashes, crash_every_write
from keel.testing.fakes import StepCall, StepMock, mock_step
from keel.testing.replay import (
    ReplayDiverged,
    assert_golden,
    assert_replays,
    golden_journals,
    replay_golden_folder,
)

__all__ = [
    "CrashFailure",
    "CrashPoint",
    "CrashReport",
    "ReplayDiverged",
    "RunOutcome",
    "StepCall",
    "StepExecution",
    "StepMock",
    "Write",
    "assert_golden",
    "assert_replays",
    "assert_survives_crashes",
    "crash_every_write",
    "golden_journals",
    "mock_step",
    "replay_golden_folder",
]
