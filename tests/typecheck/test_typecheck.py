"""``mypy --strict`` over what a new user reads first: the README's complete
examples, ``examples/``, and a probe of how ``await step.aio(...)`` is typed.

Which README blocks are checked: a ```python block directly preceded by the
line ``<!-- typecheck -->`` is a complete program and must pass ``mypy
--strict`` as it stands. Other blocks are excerpts (they use names defined
elsewhere) and are not checked. One mypy run covers every file (mypy's cache
lives in the test's tmp directory).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

api = pytest.importorskip("mypy.api")

ROOT = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).with_name("aio_probe.py")
_BLOCK = re.compile(r"<!-- typecheck -->\n```python\n(.*?)```", re.DOTALL)
_EXPECTED = re.compile(r"reveal_type\(.*\)  # (\S+)$")


def readme_programs() -> list[str]:
    return _BLOCK.findall((ROOT / "README.md").read_text(encoding="utf-8"))


def test_readme_marks_its_first_example_as_a_complete_program() -> None:
    programs = readme_programs()
    assert programs, "no README block is marked <!-- typecheck -->"
    # The first example is examples/quickstart.py verbatim, so the file that is
    # run (test_examples.py) is the text that is read.
    assert programs[0] == (ROOT / "examples" / "quickstart.py").read_text(encoding="utf-8")


def test_readme_examples_and_step_types_pass_mypy_strict(tmp_path: Path) -> None:
    files = []
    for i, program in enumerate(readme_programs()):
        path = tmp_path / f"readme_block_{i}.py"
        path.write_text(program, encoding="utf-8")
        files.append(str(path))
    files += sorted(str(p) for p in (ROOT / "examples").glob("*.py"))
    files.append(str(PROBE))
    stdout, stderr, status = api.run(
        [
            "--strict",
            "--no-incremental",
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            "--python-version",
            "3.11",
            "--show-error-codes",
            "--no-error-summary",
            *files,
        ]
    )
    revealed = [line for line in stdout.splitlines() if "Revealed type is" in line]
    errors = [line for line in stdout.splitlines() if "Revealed type is" not in line]
    assert errors == [] and stderr == "", stdout + stderr
    probe_lines = PROBE.read_text(encoding="utf-8").splitlines()
    expected = {
        n: m.group(1)
        for n, line in enumerate(probe_lines, start=1)
        if (m := _EXPECTED.search(line))
    }
    got = {}
    for line in revealed:
        where, _, what = line.partition(": note: Revealed type is ")
        got[int(where.rsplit(":", 1)[1])] = what.strip('"')
    assert got == expected
    assert status == 0
