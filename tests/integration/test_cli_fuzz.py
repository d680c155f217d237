"""Fuzzing ``keel``'s arguments on SQLite and PostgreSQL, a real worker beside it.

Every refusal must be one ``error: ...`` line on stderr with a non-zero exit
and no traceback (an exception escaping the command fails the test); the
worker, a ``keel worker`` subprocess on the same database, must keep
completing runs started between the fuzzed commands.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import keel
from keel.cli.main import cli
from keel.workflow.registry import default_registry
from tests import pg
from tests.acceptance.harness import KEEL_CMD, REPO
from tests.integration.test_cli import APP, app_dir

__all__ = ["app_dir"]  # a fixture

# What a command line can carry: any text but NUL, bytes that are not UTF-8
# (lone surrogates, PEP 383), and the shapes that used to escape as tracebacks.
_chars = st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))
_surrogate = st.sampled_from(["\udcff", "\udc80", "ab\udcfe"])
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(_chars, max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(_chars, max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
).map(json.dumps)
_nasty = st.sampled_from(
    [
        "",
        " ",
        "[" * 1000 + "]" * 1000,
        "{" * 200,
        "1" * 5000,
        "1e999",
        "-0",
        "NaN",
        "x" * 3000,
        "../../x",
        "cli_greet",
        "completed",
        "1h",
        "0d",
        "99999999999w",
        "0001-01-01T00:00",
        "9999-12-31T23:59:59",
        "2026-01-01T00:00+14:00",
    ]
)
ARG = st.one_of(st.text(_chars, max_size=20), _surrogate, _json, _nasty)
STATE = st.sampled_from(["pending", "running", "completed", "failed", "nope"]) | ARG


@st.composite
def command(draw: st.DrawFn) -> list[str]:
    """One ``keel`` command line with fuzzed values (options in a fuzzed order)."""
    kind = draw(st.sampled_from(["start", "signal", "show", "history", "list", "export", "cancel"]))
    if kind == "start":
        args = ["start", draw(st.sampled_from(["cli_greet", "cli_fail"]) | ARG), "--app", APP]
        args += draw(st.lists(ARG, max_size=2))
        opts = [
            ["--run-id", draw(ARG)],
            ["--kwarg", draw(ARG)],
            ["--kwarg", "punctuation=" + draw(ARG)],
        ]
    elif kind == "signal":
        args = ["signal", draw(ARG), draw(ARG), *draw(st.lists(ARG, max_size=1))]
        opts = []
    elif kind in ("show", "history"):
        args, opts = ["runs", kind, draw(ARG)], [["--json"]]
    elif kind == "cancel":
        args, opts = ["cancel", draw(ARG)], []
    elif kind == "list":
        args = ["runs", "list"]
        opts = [
            ["-s", draw(STATE)], ["-s", draw(STATE)], ["-w", draw(ARG)], ["--since", draw(ARG)],
            ["--until", draw(ARG)], ["--parent", draw(ARG)], ["--limit", draw(ARG)],
            ["--cursor", draw(ARG)], ["--count"], ["--json"], ["--local"],
        ]  # fmt: skip
    else:
        # Output under the test's directory only: a relative path without "..".
        out = draw(st.text(_chars, min_size=1, max_size=12).filter(lambda t: ".." not in t))
        args = ["runs", "export", "-o", "out/" + out.lstrip("/"), *draw(st.lists(ARG, max_size=1))]
        opts = [
            ["-s", draw(STATE)],
            ["-w", draw(ARG)],
            ["--since", draw(ARG)],
            ["--limit", draw(ARG)],
        ]
    chosen = draw(st.lists(st.sampled_from(opts), max_size=4)) if opts else []
    return args + [word for opt in chosen for word in opt]


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'keel.db'}"
        return
    pg.require_postgres()
    db = pg.fresh_database_url()
    yield db
    pg.drop_database_later(db)


async def _start_probe(url: str, n: int) -> str:
    async with keel.Client(url) as client:
        handle = await client.start(
            default_registry.get("cli_greet"), f"probe {n}", run_id=f"probe-{n}"
        )
        return handle.run_id


async def _wait_completed(url: str, run_ids: list[str], worker: subprocess.Popen[bytes]) -> None:
    async with keel.Client(url) as client:
        deadline = time.monotonic() + 60
        for run_id in run_ids:
            while (await client.get(run_id)).state is not keel.RunState.COMPLETED:
                assert worker.poll() is None, "the worker exited"
                assert time.monotonic() < deadline, f"run {run_id} never completed"
                await asyncio.sleep(0.05)


def test_fuzzed_arguments_are_refused_cleanly_while_a_worker_runs(
    url: str, tmp_path: Path, app_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    importlib.import_module(APP)  # cli_greet, for the probes
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KEEL_DATABASE_URL", url)
    asyncio.run(_start_probe(url, 0))  # creates the database before the worker opens it
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(app_dir)])}
    log = (tmp_path / "worker.err").open("wb")
    worker = subprocess.Popen(
        [*KEEL_CMD, "worker", APP, "--db", url, "--poll-interval", "0.05"],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    probes = ["probe-0"]
    refusals: list[str] = []
    try:

        @settings(
            max_examples=int(os.environ.get("KEEL_FUZZ_EXAMPLES", "120")),
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(command())
        def check(args: list[str]) -> None:
            result = CliRunner().invoke(cli, args)
            if result.exception is not None and not isinstance(result.exception, SystemExit):
                raise AssertionError(f"keel {args!r} raised") from result.exception
            if result.exit_code != 0:
                lines = [line for line in result.stderr.splitlines() if line.strip()]
                assert len(lines) == 1, (args, result.stderr)
                assert lines[0].startswith("error: "), (args, result.stderr)
                assert "Traceback" not in result.output, (args, result.output)
                refusals.append(lines[0])
            if len(refusals) % 25 == 1 and len(probes) < 8:  # now and then, work for the worker
                probes.append(asyncio.run(_start_probe(url, len(probes))))

        check()
        asyncio.run(_wait_completed(url, probes, worker))
        assert worker.poll() is None, (tmp_path / "worker.err").read_text()
    finally:
        worker.kill()
        worker.wait(timeout=10)
        log.close()
    assert refusals, "nothing was refused: the fuzzing exercised nothing"
    assert len(probes) > 2
    sys.modules.pop(APP, None)
