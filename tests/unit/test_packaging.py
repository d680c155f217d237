"""What a user sees of the package before running it: its metadata and README."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _project() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        project = tomllib.load(f)["project"]
    assert isinstance(project, dict)
    return project


def test_the_summary_describes_what_is_built_not_what_is_next() -> None:
    summary = str(_project()["description"])
    assert "PostgreSQL" in summary and "SQLite" in summary
    assert "next" not in summary.lower()


def test_the_license_file_ships_and_the_metadata_names_it() -> None:
    project = _project()
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    assert "Apache License" in (ROOT / "LICENSE").read_text()


def test_classifiers_say_typed_and_the_python_versions() -> None:
    classifiers = _project()["classifiers"]
    assert isinstance(classifiers, list)
    assert "Typing :: Typed" in classifiers
    assert "Programming Language :: Python :: 3.11" in classifiers


def test_the_readme_speaks_to_users_not_of_work_history() -> None:
    readme = (ROOT / "README.md").read_text()
    assert not re.search(r"\bissue \d+", readme, re.IGNORECASE), "internal issue numbers"
    assert not re.search(r"\b(first|second|third|this) session\b", readme, re.IGNORECASE)


def test_the_readme_layout_and_states_match_the_code() -> None:
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout") :]
    for package in ("sqlite/", "postgres/", "worker/", "cli/", "testing/"):
        assert package in layout, package
    states = re.search(r"\*\*Run states:\*\*(.*?)—", readme, re.DOTALL)
    assert states is not None
    from keel.core.states import RunState

    for state in RunState:
        assert state.value in states.group(1), state
