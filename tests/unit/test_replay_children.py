"""Child commands on the pure core: started/outcome events, replay, argument changes."""

from __future__ import annotations

import msgspec
import pytest

import keel
from keel.core.events import ChildCompleted, ChildFailed, ChildStarted, CommandKind
from keel.core.journal import JournalEntry
from keel.core.replay import Execution
from keel.errors import NondeterminismError
from tests.unit.test_replay import STARTED, FixedLive


@keel.workflow(name="core_children.kid")
async def kid(x: int) -> int:
    return x


@keel.workflow(name="core_children.parent")
async def parent(x: int) -> str:
    a = await keel.start_child(kid, x)
    try:
        await keel.run_child(kid, x + 1)
    except keel.ChildWorkflowError as exc:
        return f"{await a.result()} {exc.error_type}"
    return "no error"


def _live() -> tuple[Execution, list[JournalEntry]]:
    ex = Execution("p", parent.fn, (1,), {}, [STARTED], FixedLive())
    ex.start()
    [first] = ex.pending()
    assert first.id.kind is CommandKind.CHILD and first.child_run_id is None
    ex.record(first, ChildStarted(child_run_id="p/a", args_hash=first.args_hash))
    # Started: the second child is issued while the first is still running.
    first_cmd, second = ex.pending()
    assert first_cmd is first and second.id.ordinal == 1
    ex.record(second, ChildStarted(child_run_id="p/b", args_hash=second.args_hash))
    ex.record(
        second,
        ChildFailed(child_run_id="p/b", error={"type": "builtins.ValueError", "message": "no"}),
    )
    ex.record(first, ChildCompleted(child_run_id="p/a", result=msgspec.Raw(b"7")))
    assert ex.outcome is not None and ex.outcome.result == b'"7 builtins.ValueError"'
    return ex, list(ex.journal)


def test_child_events_resolve_start_and_result_and_replay_identically() -> None:
    _, journal = _live()
    again = Execution("p", parent.fn, (1,), {}, journal, FixedLive())
    again.start()
    assert again.outcome is not None and again.outcome.result == b'"7 builtins.ValueError"'
    assert again.outbox == []  # replay issues nothing: no child is started again


def test_changed_child_arguments_are_nondeterminism() -> None:
    _, journal = _live()
    again = Execution("p", parent.fn, (5,), {}, journal, FixedLive())
    with pytest.raises(NondeterminismError, match=r"child 'core_children\.kid'"):
        again.start()


def test_a_refused_start_raises_at_start_child() -> None:
    ex = Execution("p", parent.fn, (1,), {}, [STARTED], FixedLive())
    ex.start()
    [first] = ex.pending()
    ex.record(
        first,
        ChildFailed(
            child_run_id="p/a", error={"type": "keel.errors.RunExistsError", "message": "taken"}
        ),
    )
    assert ex.outcome is not None and ex.outcome.status == "failed"
    assert isinstance(ex.outcome.error, keel.ChildWorkflowError)
    assert ex.outcome.error.error_type == "keel.errors.RunExistsError"


def test_child_calls_outside_a_workflow_are_clear_errors() -> None:
    import asyncio

    with pytest.raises(keel.WorkflowError, match="inside a workflow"):
        asyncio.run(keel.start_child(kid, 1))
    with pytest.raises(keel.WorkflowError, match="inside a workflow"):
        keel.get_child("x")
    with pytest.raises(keel.WorkflowError, match="inside a workflow"):
        asyncio.run(keel.run_child(kid, 1))


@keel.workflow(name="core_children.named")
async def named(child_id: str) -> int:
    return await keel.run_child(kid, 1, child_id=child_id)


def test_a_changed_child_id_is_nondeterminism() -> None:
    ex = Execution("p", named.fn, ("a",), {}, [STARTED], FixedLive())
    ex.start()
    [cmd] = ex.pending()
    ex.record(cmd, ChildStarted(child_run_id="a", args_hash=cmd.args_hash))
    ex.record(cmd, ChildCompleted(child_run_id="a", result=msgspec.Raw(b"1")))
    assert ex.outcome is not None and ex.outcome.result == b"1"
    same = Execution("p", named.fn, ("a",), {}, list(ex.journal), FixedLive())
    same.start()
    assert same.outcome is not None and same.outcome.result == b"1"
    changed = Execution("p", named.fn, ("b",), {}, list(ex.journal), FixedLive())
    with pytest.raises(NondeterminismError, match="different arguments"):
        changed.start()
