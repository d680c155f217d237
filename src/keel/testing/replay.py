"""The replay checker, for tests: re-exports :mod:`keel.replay`.

Kept so ``from keel.testing.replay import check_files`` goes on working; the
checker itself is production code (``keel replay`` uses it) in :mod:`keel.replay`.
"""

from __future__ import annotations

from keel.replay import (
    JournalVerdict,
    ReplayCheckReport,
    ReplayReport,
    check_files,
    check_journal,
    check_replay,
    check_runs,
    dump_journal,
    export_runs,
    iter_runs,
    journal_filename,
    journal_files,
    load_journal,
)

__all__ = [
    "JournalVerdict",
    "ReplayCheckReport",
    "ReplayReport",
    "check_files",
    "check_journal",
    "check_replay",
    "check_runs",
    "dump_journal",
    "export_runs",
    "iter_runs",
    "journal_filename",
    "journal_files",
    "load_journal",
]
