"""A run's input is checked against the workflow's annotations at ``start``:
a value the worker could not decode is refused there, and nothing is written."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import keel
from keel.cli.main import cli


@dataclass
class Line:
    sku: str
    qty: int


@keel.workflow(name="input_order")
async def order(sku: str, qty: int, lines: list[Line] | None = None, *, note: str = "") -> int:
    return qty


async def _no_runs(client: keel.Client) -> None:
    assert (await client.list()).runs == []


async def test_a_wrong_type_is_refused_at_start_naming_the_parameter(
    make_store: Callable[[], Any],
) -> None:
    async with keel.Client(make_store()) as client:
        with pytest.raises(keel.InvalidInputError) as info:
            await client.start(order, "MUG", qty="two")
        err = info.value
        assert (err.workflow, err.parameter, err.expected) == ("input_order", "qty", "int")
        assert "argument 'qty' of workflow 'input_order'" in str(err)
        assert "expected int" in str(err) and "'two'" in str(err)
        assert isinstance(err, keel.SerializationError)  # what callers caught before
        await _no_runs(client)


async def test_nested_and_keyword_values_are_checked_too(make_store: Callable[[], Any]) -> None:
    async with keel.Client(make_store()) as client:
        with pytest.raises(keel.InvalidInputError) as info:
            await client.start(order, "MUG", 1, [Line("A", 1), {"sku": "B", "qty": "x"}])
        assert info.value.parameter == "lines"
        assert "$.lines[1].qty" in str(info.value) or "qty" in str(info.value)
        with pytest.raises(keel.InvalidInputError) as info:
            await client.start(order, "MUG", 1, note=5)
        assert (info.value.parameter, info.value.expected) == ("note", "str")
        await _no_runs(client)


async def test_by_name_start_is_checked_and_good_input_still_starts(
    make_store: Callable[[], Any],
) -> None:
    async with keel.Client(make_store()) as client:
        with pytest.raises(keel.InvalidInputError):
            await client.start("input_order", 7, 1)  # sku must be a str
        await _no_runs(client)
        run = await client.start("input_order", "MUG", 2, [Line("A", 1)], run_id="ok")
        assert run.created
        assert [r.run_id for r in (await client.list()).runs] == ["ok"]


def test_keel_start_refuses_a_wrong_type_and_creates_no_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KEEL_DATABASE_URL", raising=False)
    module = tmp_path / "input_cli_app.py"
    module.write_text(
        "import keel\n\n"
        "@keel.workflow(name='input_cli')\n"
        "async def wf(qty: int) -> int:\n"
        "    return qty\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    result = CliRunner().invoke(cli, ["start", "input_cli", "--app", "input_cli_app", '"two"'])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: "), result.stderr
    assert "argument 'qty' of workflow 'input_cli'" in result.stderr
    assert "expected int" in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "keel.db").exists()


async def test_a_schedule_checks_its_input_too(make_store: Callable[[], Any]) -> None:
    async with keel.Client(make_store()) as client:
        with pytest.raises(keel.InvalidInputError) as info:
            await client.schedule(order, "MUG", "two", cron="@daily")
        assert info.value.parameter == "qty"
        assert await client.list_schedules() == []


async def test_bad_input_creates_no_database_file(tmp_path: Path) -> None:
    path = tmp_path / "never.db"
    client = keel.Client(f"sqlite:///{path}")
    try:
        with pytest.raises(keel.InvalidInputError):
            await client.start(order, "MUG", "two")
        with pytest.raises(TypeError):
            await client.start(order, "MUG")  # qty missing
    finally:
        await client.close()
    assert not path.exists()
