"""Values JSON cannot hold and strings no backend can store: refused at the call,
typed, identical on every backend and every path, with nothing written."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from click.testing import CliRunner

import keel
from keel.cli.main import cli
from keel.errors import ConfigurationError, KeelError, SerializationError

LOSSY = ["nan", "inf", "-inf", "collide"]


def make_lossy(kind: str) -> Any:
    """A value that JSON would silently change: NaN/±inf become null, keys collide."""
    return {1: "int", "1": "str"} if kind == "collide" else float(kind)


def is_refusal(message: str) -> bool:
    return "has no JSON form" in message or "both written as" in message


@keel.step
async def values_echo(value: Any) -> Any:
    return value


@keel.step
async def values_make(kind: str) -> Any:
    return make_lossy(kind)


@keel.workflow(name="values.echo")
async def echo(value: Any) -> Any:
    return value


@keel.workflow(name="values.inbox")
async def inbox() -> Any:
    return await keel.wait_for_signal("go")


@keel.workflow(name="values.lossy")
async def lossy(path: str, kind: str) -> str:
    """Tries one lossy value on one path inside a workflow; reports what was raised."""
    bad = make_lossy(kind)
    try:
        if path == "step_args":
            await values_echo(bad)
        elif path == "step_result":
            await values_make(kind)
        elif path == "side_effect":
            await keel.side_effect(lambda: make_lossy(kind))
        elif path == "child":
            await keel.start_child(echo, bad)
        elif path == "continue":
            keel.continue_as_new(bad, kind)
        elif path == "result":
            return bad  # type: ignore[no-any-return]
    except (SerializationError, keel.StepFailedError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return "not refused"


# --- values JSON would change ------------------------------------------------------------


@pytest.mark.parametrize("kind", LOSSY)
async def test_client_refuses_lossy_start_signal_and_schedule_values(env: Any, kind: str) -> None:
    bad = make_lossy(kind)
    async with env() as (client, _):
        with pytest.raises(SerializationError) as info:
            await client.start(echo, bad, run_id="lossy")
        assert is_refusal(str(info.value)), info.value
        with pytest.raises(SerializationError):
            await client.start(echo, [1.0, {"x": bad}], run_id="lossy")
        with pytest.raises(SerializationError):
            await client.schedule(echo, bad, cron="* * * * *", schedule_id="s")
        assert (await client.list()).runs == []
        assert await client.list_schedules() == []

        waiting = await client.start(inbox, run_id="inbox")
        with pytest.raises(SerializationError) as info:
            await client.signal("inbox", "go", {"reading": bad})
        assert is_refusal(str(info.value)), info.value
        await client.signal("inbox", "go", 1.5)  # the refused one was never buffered
        assert await waiting.result(timeout=20) == 1.5


@pytest.mark.parametrize(
    "path", ["step_args", "step_result", "side_effect", "child", "continue", "result"]
)
@pytest.mark.parametrize("kind", LOSSY)
async def test_workflow_paths_refuse_lossy_values(env: Any, path: str, kind: str) -> None:
    async with env() as (client, _):
        run = await client.start(lossy, path, kind)
        if path == "result":
            with pytest.raises(keel.RunFailedError) as failed:
                await run.result(timeout=20)
            assert failed.value.error_type == "keel.errors.SerializationError"
            assert is_refusal(failed.value.message), failed.value.message
            return
        outcome = await run.result(timeout=20)
        assert is_refusal(outcome), outcome
        # Nothing lossy reached the journal: no completed step or side effect, no child.
        history = await client.history(run.run_id)
        assert not [e for e in history if e.type in ("step_completed", "side_effect")]
        assert [r.run_id for r in (await client.list()).runs] == [run.run_id]


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", "1e999", "[1, NaN]"])
def test_cli_refuses_non_finite_json_arguments(
    text: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Python's json module reads these as floats; they must not be stored as null.
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'keel.db'}"
    app = ["--app", __name__, "--db", url]
    result = CliRunner().invoke(cli, ["start", *app, "values.echo", "--", text])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: ") and "has no JSON form" in result.stderr
    assert "Traceback" not in result.output
    started = CliRunner().invoke(cli, ["start", "values.inbox", "--run-id", "r", *app])
    assert started.exit_code == 0, started.output
    sent = CliRunner().invoke(cli, ["signal", "--db", url, "r", "go", "--", text])
    assert sent.exit_code == 1 and "has no JSON form" in sent.stderr, sent.output
    listed = CliRunner().invoke(cli, ["runs", "list", "--json", "--db", url])
    assert [r["run_id"] for r in json.loads(listed.output)["runs"]] == ["r"]


# --- strings no backend can store, and wrong types ----------------------------------------

UNSTORABLE = ["a\x00b", "a\udc80b", "\ud800"]


def client_calls(client: keel.Client, text: Any) -> list[tuple[str, Callable[[], Awaitable[Any]]]]:
    """Every public client method, given ``text`` where it takes an id or a name."""
    return [
        ("start run_id", lambda: client.start(echo, 1, run_id=text)),
        ("get", lambda: client.get(text)),
        ("history", lambda: client.history(text)),
        ("result", lambda: client.result(text, timeout=5)),
        ("cancel", lambda: client.cancel(text)),
        ("signal run_id", lambda: client.signal(text, "go", 1)),
        ("signal name", lambda: client.signal("inbox", text, 1)),
        ("list workflow", lambda: client.list(workflow=text)),
        ("list cursor", lambda: client.list(cursor=text)),
        ("schedule_id", lambda: client.schedule(echo, 1, cron="* * * * *", schedule_id=text)),
        ("get_schedule", lambda: client.get_schedule(text)),
        ("pause_schedule", lambda: client.pause_schedule(text)),
        ("resume_schedule", lambda: client.resume_schedule(text)),
        ("delete_schedule", lambda: client.delete_schedule(text)),
        ("list_schedules", lambda: client.list_schedules(workflow=text)),
        ("set_queue_limit", lambda: client.set_queue_limit(text, 2)),
    ]


async def assert_nothing_written(client: keel.Client) -> None:
    assert [r.run_id for r in (await client.list()).runs] == ["inbox"]
    assert await client.list_schedules() == []
    assert await client.queues() == []
    # No signal was buffered: the first one the run receives is this one.
    await client.signal("inbox", "go", "first")
    assert await client.result("inbox", timeout=20) == "first"


async def test_unstorable_ids_and_names_are_configuration_errors(env: Any) -> None:
    async with env() as (client, _):
        await client.start(inbox, run_id="inbox")
        for text in UNSTORABLE:
            for label, call in client_calls(client, text):
                with pytest.raises(ConfigurationError) as info:
                    await call()
                assert repr(text) in str(info.value), (label, info.value)
        await assert_nothing_written(client)


async def test_wrong_types_are_type_errors(env: Any) -> None:
    async with env() as (client, _):
        await client.start(inbox, run_id="inbox")
        for value in (123, b"inbox", ["inbox"]):
            for label, call in client_calls(client, value):
                if label == "list workflow" and isinstance(value, list):
                    continue  # a list of workflow names is a filter of several
                with pytest.raises(TypeError) as info:
                    await call()
                assert not isinstance(info.value, KeelError), label
                assert "must be a str" in str(info.value), (label, info.value)
        with pytest.raises(TypeError, match=r"needs a @keel\.workflow or its name"):
            await client.start(42)  # type: ignore[call-overload]
        await assert_nothing_written(client)


async def test_malformed_cursor_and_long_signal_name_are_refused_alike(env: Any) -> None:
    async with env() as (client, _):
        await client.start(inbox, run_id="inbox")
        with pytest.raises(ConfigurationError, match="invalid list_runs cursor"):
            await client.list(cursor="not a cursor")
        # PostgreSQL indexes signal names: a name too long for the index must fail
        # the same way, before writing, on every backend.
        with pytest.raises(ConfigurationError, match="at most 200 chars"):
            await client.signal("inbox", "g" * 5000, 1)
        with pytest.raises(ConfigurationError, match="at most 200 chars"):
            await client.start(echo, 1, run_id="r" * 201)
        await assert_nothing_written(client)


async def test_unusual_but_valid_text_round_trips(env: Any) -> None:
    run_id = "ünïcødé 🚀 #1 'quoted' \\ / \t end"
    async with env() as (client, _):
        run = await client.start(inbox, run_id=run_id)
        await client.signal(run_id, "gö 🚦", 0)  # another name: stays buffered
        await client.signal(run_id, "go", {"text": "\x00 and 🚀", "big": 2**80})
        assert await run.result(timeout=20) == {"text": "\x00 and 🚀", "big": 2**80}
        assert (await client.get(run_id)).run_id == run_id


@pytest.mark.parametrize("text", UNSTORABLE, ids=repr)
def test_unstorable_workflow_and_step_names_fail_at_decoration(text: str) -> None:
    async def fn() -> None: ...

    with pytest.raises(ConfigurationError, match="workflow name"):
        keel.workflow(name=text)(fn)
    with pytest.raises(ConfigurationError, match="step name"):
        keel.step(name=text)(fn)
