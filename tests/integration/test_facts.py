"""Large step results stored once as facts, on SQLite and PostgreSQL: equal
values of several runs (a code workflow and a graph) take one facts row, the
journal rows keep only the digest, and every reader sees the whole value:
``Client.result``/``history``/``steps``, ``keel runs history``, ``keel runs
export`` then ``keel replay``, forks, and workers that replay every turn."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

import keel
from keel.cli.main import cli
from keel.core.facts import value_digest
from keel.errors import FactDigestError, FactNotFoundError
from tests import pg
from tests.acceptance.apps import facts as app

APP = "tests.acceptance.apps.facts"
VALUE = json.dumps(app.text_of("ab")).encode()  # the encoded result: a JSON string
DIGEST = value_digest(VALUE)


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'keel.db'}"
        return
    pg.require_postgres()
    url = pg.fresh_database_url()
    yield url
    pg.drop_database_later(url)


def sql(url: str, query: str) -> list[tuple[Any, ...]]:
    """Rows of ``query`` read straight from the database (tables unqualified)."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return conn.execute(query).fetchall()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET search_path TO keel")
        return conn.execute(query).fetchall()


def keel_cli(*args: str) -> Result:
    sys.modules.pop(APP, None)
    result = CliRunner().invoke(cli, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def facts_rows(url: str) -> list[tuple[str, int]]:
    return [(str(d), int(n)) for d, n in sql(url, "SELECT digest, length(data) FROM facts")]


def journal_rows(url: str, run_id: str) -> list[tuple[str, bytes]]:
    rows = sql(url, f"SELECT command, data FROM events WHERE run_id = '{run_id}' ORDER BY seq")
    return [(str(c), bytes(d)) for c, d in rows if c and c.startswith("step:")]


async def run_all(url: str, **options: Any) -> tuple[list[str], str]:
    """Two runs of the code workflow and one graph run, all with the same large value."""
    async with keel.Worker(url, cache=False, poll_interval=0.05, **options) as worker:
        client = worker.client()
        runs = [await client.start(app.flow, "ab") for _ in range(2)]
        graph = await client.start(app.docs_wf, seed="ab")
        for run in runs:
            assert await run.result(timeout=30) == app.summary(app.text_of("ab"))
        assert await graph.result(timeout=30) == {"size": app.SIZE}
        return [r.run_id for r in runs], graph.run_id


def test_equal_large_results_are_stored_once_and_read_whole(db: str, tmp_path: Path) -> None:
    run_ids, graph_id = asyncio.run(run_all(db))
    # One row holds the value of all three runs' steps (the graph node's too).
    assert facts_rows(db) == [(DIGEST, len(VALUE))]
    for run_id in [*run_ids, graph_id]:
        [row] = [
            d
            for c, d in journal_rows(db, run_id)
            if c in ("step:accf.blob#0", "step:accf.graph.doc#0")
        ]
        assert len(row) < 400 and DIGEST.encode() in row and VALUE not in row
        assert json.loads(row)["result"] is None and json.loads(row)["format"] == 2
    # Small results stay in the journal, with their digest.
    [wait] = [d for c, d in journal_rows(db, graph_id) if c == "step:accf.graph.size#0"]
    assert json.loads(wait) == {
        "result": app.SIZE,
        "args_hash": json.loads(wait)["args_hash"],
        "attempt": 1,
        "started_at": json.loads(wait)["started_at"],
        "worker": json.loads(wait)["worker"],
        "digest": value_digest(str(app.SIZE).encode()),
        # Its argument is the large value: over the input cap, only its size.
        "input_size": json.loads(wait)["input_size"],
    }
    assert json.loads(wait)["input_size"] > len(VALUE)

    async def read() -> None:
        async with keel.Client(db) as client:
            history = await client.history(run_ids[0])
            [done] = [e for e in history if e.command == "step:accf.blob#0"]
            assert done.data["result"] == app.text_of("ab")
            assert done.data["digest"] == DIGEST and "format" not in done.data
            steps = {s.command: s for s in await client.steps(run_ids[0])}
            assert json.loads(steps["step:accf.blob#0"].value or b"null") == app.text_of("ab")
            nodes = await client.nodes(graph_id)
            assert nodes["doc"].output == app.text_of("ab")
            assert await client.load_fact(DIGEST) == app.text_of("ab")
            assert await client.load_fact(DIGEST, str) == app.text_of("ab")

    asyncio.run(read())

    shown = keel_cli("runs", "history", run_ids[0], "--db", db, "--json")
    assert shown.exit_code == 0, shown.output
    events = json.loads(shown.stdout)["events"]
    [event] = [e for e in events if e["command"] == "step:accf.blob#0"]
    assert event["data"]["result"] == app.text_of("ab")

    out = tmp_path / "journals"
    exported = keel_cli("runs", "export", run_ids[0], "--db", db, "-o", str(out))
    assert exported.exit_code == 0, exported.output
    [file] = list(out.glob("*.json"))
    [row] = [e for e in json.loads(file.read_text()) if e["command"] == "step:accf.blob#0"]
    assert row["data"]["result"] == app.text_of("ab")  # the file stands alone
    checked = keel_cli("replay", "--app", APP, str(file))
    assert checked.exit_code == 0, checked.output
    assert keel_cli("replay", "--app", APP, "--db", db).exit_code == 0


def test_a_fork_shares_the_facts_and_finishes_alike(db: str) -> None:
    async def go() -> str:
        run_ids, _ = await run_all(db)
        async with keel.Worker(db, cache=False, poll_interval=0.05) as worker:
            client = worker.client()
            forked = await client.fork(run_ids[0], "sleep:sleep#0")
            result = await forked.result(timeout=30)
            assert result == app.summary(app.text_of("ab"))
            return forked.run_id

    fork_id = asyncio.run(go())
    assert facts_rows(db) == [(DIGEST, len(VALUE))]  # no copy of the bytes
    [(_, row)] = [r for r in journal_rows(db, fork_id) if r[0] == "step:accf.blob#0"]
    assert len(row) < 400 and DIGEST.encode() in row


def test_no_threshold_keeps_results_in_the_journal(db: str) -> None:
    run_ids, _ = asyncio.run(run_all(db, fact_threshold=None))
    assert facts_rows(db) == []
    [(_, row)] = [r for r in journal_rows(db, run_ids[0]) if r[0] == "step:accf.blob#0"]
    assert VALUE in row and DIGEST.encode() in row


def test_save_and_load_facts_through_the_client(db: str) -> None:
    async def go() -> None:
        async with keel.Client(db) as client:
            first = await client.save_fact({"b": 2, "a": [1, 2]})
            again = await client.save_fact({"a": [1, 2], "b": 2})  # equal value, other order
            assert first == again == value_digest(b'{"a":[1,2],"b":2}')
            assert await client.load_fact(first) == {"a": [1, 2], "b": 2}
            missing = value_digest(b"nothing")
            with pytest.raises(FactNotFoundError, match=missing):
                await client.load_fact(missing)
            with pytest.raises(FactDigestError):
                await client.load_fact("not-a-digest")

    asyncio.run(go())
    assert len(facts_rows(db)) == 1


def test_keel_worker_refuses_a_tiny_fact_threshold(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'keel.db'}"
    result = keel_cli("worker", APP, "--db", db, "--fact-threshold", "10")
    assert result.exit_code == 2, result.output
    assert "--fact-threshold" in result.stderr and "1024" in result.stderr
