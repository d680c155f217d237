"""``keel replay`` and ``keel runs export`` over a real SQLite file and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from keel.cli.common import Settings, aware, parse_since
from keel.cli.main import cli
from keel.core.events import encode_data, run_started
from keel.errors import RunFailedError
from keel.store.base import NewEvent, NewRun
from tests import pg
from tests.replay.shop import record, recording
from tests.replay.shop_app import VARIANT_ENV

APP = "tests.replay.shop_app"


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL of each backend with a URL (memory has none)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'keel.db'}"
        return
    pg.require_postgres()
    url = pg.fresh_database_url()
    yield url
    pg.drop_database_later(url)


def recorded(url: str, **counts: int) -> dict[str, list[str]]:
    """Runs of the v1 code in ``url`` (see :func:`tests.replay.shop.record`)."""

    async def go() -> dict[str, list[str]]:
        async with recording(url) as client:
            return await record(client, **counts)

    return asyncio.run(go())


def keel(*args: str, variant: str = "v1") -> Result:
    """Invoke ``keel`` in-process with the app's code as ``variant``."""
    sys.modules.pop(APP, None)  # import it afresh: a new deploy of the code
    result = CliRunner().invoke(cli, list(args), env={VARIANT_ENV: variant})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def replay(*args: str, variant: str = "v1") -> Result:
    return keel("replay", "--app", APP, *args, variant=variant)


def report_of(result: Result) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def test_exit_codes_and_every_divergence_reported(db: str) -> None:
    ids = recorded(db, done=2, in_flight=1, other=1)
    shop_runs = ids["done"] + ids["in_flight"]

    ok = replay("--db", db)
    assert ok.exit_code == 0, ok.output
    assert "4 journals checked: 3 replay, 0 diverged, 1 skipped" in ok.stdout
    assert "workflow 'rc_other' is not registered" in ok.stdout  # the skipped one, and why
    assert "--strict makes them" in ok.stdout
    assert replay("--db", db, "--strict").exit_code == 1

    for variant, recorded_text, code_text in [
        ("reordered", "step_completed of step 'rc_reserve' (#0)", "step 'rc_charge' (#0)"),
        ("renamed", "step_completed of step 'rc_reserve' (#0)", "step 'rc_hold' (#0)"),
        ("changed_args", "step 'rc_reserve' (#0) with arguments hash", "different arguments"),
    ]:
        human = replay("--db", db, variant=variant)
        assert human.exit_code == 1, human.output
        assert "4 journals checked: 0 replay, 3 diverged, 1 skipped" in human.stdout
        for run_id in shop_runs:
            assert run_id in human.stdout
        assert f"recorded: {recorded_text}" in human.stdout
        assert "code:" in human.stdout and code_text in human.stdout

        as_json = replay("--db", db, "--json", variant=variant)
        assert as_json.exit_code == 1
        doc = report_of(as_json)
        assert (doc["passed"], doc["checked"], doc["diverged"]) == (False, 4, 3)
        diverged = [r for r in doc["results"] if r["status"] == "diverged"]
        assert sorted(r["run_id"] for r in diverged) == sorted(shop_runs)
        for r in diverged:
            assert r["position"] == 1
            assert recorded_text in r["recorded"] and code_text in r["requested"]


def test_filters_choose_the_runs_checked(db: str) -> None:
    ids = recorded(db, done=2, in_flight=1, other=1)

    def checked(*args: str, variant: str = "reordered") -> list[str]:
        result = replay("--db", db, "--json", *args, variant=variant)
        assert result.exit_code in (0, 1), result.output
        return [r["run_id"] for r in report_of(result)["results"]]

    assert checked("--state", "suspended") == ids["in_flight"]
    assert checked("-s", "suspended", "-s", "completed", "-w", "rc_shop") == [
        *ids["in_flight"],
        *reversed(ids["done"]),
    ]
    assert checked("--limit", "2") == [*ids["other"], *ids["in_flight"]]
    assert len(checked("--since", "1h")) == 4
    assert checked("--workflow", "rc_other") == ids["other"]
    assert replay("--db", db, "-w", "rc_other", variant="reordered").exit_code == 0
    assert replay("--db", db, "-w", "rc_other", "--strict").exit_code == 1

    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    nothing = replay("--db", db, "--since", later)
    assert nothing.exit_code == 0
    assert "no runs match" in nothing.stdout


def test_export_then_replay_the_files(db: str, tmp_path: Path) -> None:
    ids = recorded(db, done=2, in_flight=1, other=0)
    out = tmp_path / "journals"
    exported = keel("runs", "export", "--db", db, "-o", str(out))
    assert exported.exit_code == 0, exported.output
    assert exported.stdout.strip() == f"exported 3 journals to {out}"
    assert sorted(p.stem for p in out.glob("*.json")) == sorted(ids["done"] + ids["in_flight"])

    assert replay(str(out)).exit_code == 0
    diverged = replay(str(out), "--json", variant="renamed")
    assert diverged.exit_code == 1
    results = report_of(diverged)["results"]
    assert {r["source"] for r in results} == {str(p) for p in out.glob("*.json")}
    assert {(r["status"], r["position"]) for r in results} == {("diverged", 1)}

    one = tmp_path / "one"
    picked = keel("runs", "export", ids["done"][0], "--db", db, "-o", str(one))
    assert picked.exit_code == 0, picked.output
    single = one / f"{ids['done'][0]}.json"
    assert [p.name for p in one.iterdir()] == [single.name]
    assert replay(str(single), variant="reordered").exit_code == 1

    missing = keel("runs", "export", "no-such-run", "--db", db, "-o", str(tmp_path / "m"))
    assert missing.exit_code == 1
    assert "no-such-run" in missing.stderr
    assert not (tmp_path / "m").exists()


# --- usage errors: exit 2, one clear message, no traceback --------------------------------


def assert_usage_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_bad_inputs_are_usage_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    not_list = tmp_path / "obj.json"
    not_list.write_text('{"seq": 0}')
    empty = tmp_path / "empty"
    empty.mkdir()
    good_db = f"sqlite:///{tmp_path / 'keel.db'}"

    assert_usage_error(replay(str(tmp_path / "nope.json")), "does not exist")
    assert_usage_error(replay(str(bad)), "bad.json is not a journal exported by Keel")
    assert_usage_error(replay(str(not_list)), "expected a JSON list of events")
    assert_usage_error(replay(str(empty)), "holds no journal files")
    assert_usage_error(replay("--db", good_db, "--since", "7 days"), "--since", "7 days")
    assert_usage_error(replay("--db", good_db, "--since", "0d"), "positive age")
    assert_usage_error(replay("--db", good_db, "--state", "sleeping"), "sleeping")
    assert_usage_error(replay("--db", good_db, "--limit", "0"), "--limit")
    assert_usage_error(replay(str(empty), "--db", good_db), "--db select runs in a database")
    assert_usage_error(replay(str(empty), "--since", "1d", "-w", "x"), "--workflow, --since")
    assert_usage_error(replay("--app", "no_such_module_xyz"), "no_such_module_xyz")
    assert_usage_error(keel("runs", "export", "--db", good_db), "--output")
    assert_usage_error(
        keel("runs", "export", "r-1", "-w", "x", "--db", good_db, "-o", str(tmp_path)),
        "give RUN_IDs or filters",
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("45s", timedelta(seconds=45)),
        ("30m", timedelta(minutes=30)),
        ("1.5h", timedelta(minutes=90)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(days=14)),
        ("2026-05-01T10:00:00+02:00", datetime(2026, 5, 1, 8, tzinfo=UTC)),
        ("2026-05-01T08:00:00Z", datetime(2026, 5, 1, 8, tzinfo=UTC)),
        ("2026-05-01T10:00", datetime(2026, 5, 1, 10, tzinfo=UTC)),  # UTC without --local
    ],
)
def test_since_takes_an_age_or_a_time(text: str, expected: datetime | timedelta) -> None:
    with click.Context(cli, obj=Settings()):
        value = aware(parse_since(text))
    assert value == expected
    if isinstance(value, datetime):
        assert value.tzinfo is not None
    with click.Context(cli, obj=Settings(local=True)):  # --local: a time without a zone
        local = aware(parse_since(text))
    if text == "2026-05-01T10:00":
        assert local == datetime(2026, 5, 1, 10).astimezone()
    else:
        assert local == expected


@pytest.mark.parametrize("text", ["", "7", "7 days", "0d", "-1d", "1y", "yesterday"])
def test_since_rejects_anything_else(text: str) -> None:
    with pytest.raises(click.BadParameter, match="positive age"):
        parse_since(text)


def test_replay_never_creates_a_database(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    result = replay("--db", str(missing))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no Keel database")
    assert not missing.exists()


def test_a_run_that_failed_decoding_its_input_has_nothing_to_check(db: str, tmp_path: Path) -> None:
    """Its journal is run_started then run_failed: no code ran, so unchanged code
    cannot diverge from it (it used to be reported as diverged, exit 1)."""

    async def go() -> str:
        async with recording(db) as client:
            shop = client.registry.get("rc_shop")
            good = await client.start(shop, "SKU", 1)
            await good.result(timeout=30)
            bad = b'{"sku": 7}'  # not the recorded shape: the worker cannot decode it
            started = encode_data(run_started("rc_shop", shop.version, bad))
            await client.store.runs.create(
                NewRun(
                    "bad-input",
                    "rc_shop",
                    shop.version,
                    bad,
                    NewEvent("run_started", None, started),
                )
            )
            with pytest.raises(RunFailedError, match="cannot decode"):
                await client.result("bad-input", timeout=30)
            return good.run_id

    good_id = asyncio.run(go())
    result = replay("--db", db)
    assert result.exit_code == 0, result.output
    assert "2 journals checked: 1 replay, 0 diverged, 0 skipped, 1 with nothing to check" in (
        result.stdout
    )
    verbose = replay("--db", db, "-v")
    assert "nothing to check" in verbose.stdout and "before any of its code ran" in verbose.stdout
    doc = report_of(replay("--db", db, "--json", "--strict"))
    assert doc["passed"] is True and (doc["diverged"], doc["nothing_to_check"]) == (0, 1)
    verdicts = {v["run_id"]: v["status"] for v in doc["results"]}
    assert verdicts == {"bad-input": "nothing_to_check", good_id: "ok"}

    # Exported, the same journal checks the same way from a file.
    out = tmp_path / "golden"
    assert keel("runs", "export", "bad-input", "-o", str(out), "--db", db).exit_code == 0
    from_file = report_of(replay(str(out), "--json"))
    assert (from_file["passed"], from_file["nothing_to_check"]) == (True, 1)
