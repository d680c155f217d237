"""patched() / deprecate_patch() on the pure core: markers, old runs, reuse."""

from __future__ import annotations

import pytest

import keel
from keel.core.events import EventType, Patched, read
from keel.core.journal import JournalEntry
from keel.core.replay import Execution
from keel.errors import NondeterminismError, PatchMismatchError
from tests.unit.test_replay import STARTED, FixedLive, replay, run_live


@keel.step(name="patch.old")
def old_path(x: int) -> int:
    return x + 1


@keel.step(name="patch.new")
def new_path(x: int) -> int:
    return x + 100


@keel.step(name="patch.after")
def after(x: int) -> int:
    return x * 2


async def before_patch(x: int) -> int:
    """The code as it was before the change."""
    y = await old_path(x)
    return await after(y)


async def with_patch(x: int) -> int:
    """The same workflow with the change guarded by a patch."""
    y = await new_path(x) if keel.patched("bonus") else await old_path(x)
    return await after(y)


async def late_patch(x: int) -> int:
    """A change after the first step: runs recorded up to it take the new path."""
    y = await old_path(x)
    if keel.patched("late"):
        y = await new_path(y)
    return await after(y)


def result(ex: Execution) -> bytes | None:
    assert ex.outcome is not None, "the execution did not finish"
    return ex.outcome.result


def markers(journal: list[JournalEntry]) -> list[tuple[int, str | None]]:
    return [(e.seq, e.command) for e in journal if e.type is EventType.PATCHED]


def test_new_run_journals_a_marker_and_takes_the_new_path() -> None:
    ex, journal = run_live(with_patch, 1)
    assert result(ex) == b"202"
    assert markers(journal) == [(1, "patch:bonus#0")]
    assert read(Patched, journal[1].data).patch == "bonus"
    again = replay(with_patch, journal, 1)
    assert result(again) == b"202" and again.outbox == []


def test_run_recorded_before_the_patch_takes_the_old_path() -> None:
    _, journal = run_live(before_patch, 1)
    again = replay(with_patch, journal, 1)
    # False without consuming anything: the old commands still match one by one.
    assert result(again) == b"4"
    assert again.outbox == [] and markers(again.journal) == []


def test_run_that_has_not_reached_the_patch_takes_the_new_path() -> None:
    _, journal = run_live(before_patch, 1)
    suspended_after_first_step = journal[:2]
    ex = replay(late_patch, suspended_after_first_step, 1)
    # The patch point is the live tail: the marker is written there.
    assert [e.type for e in ex.outbox] == [EventType.PATCHED]
    assert [c.key for c in ex.pending()] == ["step:patch.new#0"]
    # A run that had passed the patch point replays the old way.
    assert result(replay(late_patch, journal, 1)) == b"4"


def test_decision_is_made_once_per_name_and_repeated() -> None:
    async def checks_often(x: int) -> list[bool]:
        seen = [keel.patched("bonus") for _ in range(3)]
        y = await old_path(x)
        seen.append(keel.patched("bonus"))  # another place, same change
        await after(y)
        return seen

    ex, journal = run_live(checks_often, 1)
    assert result(ex) == b"[true,true,true,true]"
    assert markers(journal) == [(1, "patch:bonus#0")]  # one marker per name
    assert result(replay(checks_often, journal, 1)) == b"[true,true,true,true]"
    _, old = run_live(before_patch, 1)
    assert result(replay(checks_often, old, 1)) == b"[false,false,false,false]"


def test_independent_patches_do_not_consume_each_others_markers() -> None:
    async def v2(x: int) -> int:
        y = await old_path(x)
        if keel.patched("b"):
            y += 1
        return await after(y)

    async def v3(x: int) -> int:
        y = await old_path(x)
        a = keel.patched("a")  # added later, right before the older patch
        if keel.patched("b"):
            y += 1
        return await after(y + (1000 if a else 0))

    _, journal = run_live(v2, 1)
    assert result(replay(v3, journal, 1)) == b"6"  # a: False (no marker), b: True
    ex, fresh = run_live(v3, 1)
    assert result(ex) == b"2006"
    assert [c for _, c in markers(fresh)] == ["patch:a#0", "patch:b#0"]


def test_patch_name_reused_for_an_earlier_change_is_a_patch_mismatch() -> None:
    async def reused(x: int) -> int:
        if keel.patched("late"):  # the name of the change after the first step
            x += 5
        y = await old_path(x)
        if keel.patched("late"):
            y = await new_path(y)
        return await after(y)

    _, journal = run_live(late_patch, 1)  # marker "late" at position 2
    assert markers(journal) == [(2, "patch:late#0")]
    with pytest.raises(PatchMismatchError) as info:
        replay(reused, journal, 1)
    err = info.value
    assert isinstance(err, NondeterminismError)
    assert (err.position, err.recorded_at, err.patch) == (1, 2, "late")
    assert "patch 'late' first at journal position 2" in str(err)
    assert "a patch name marks one change" in str(err)


def test_removed_patch_call_is_nondeterminism_with_a_hint() -> None:
    _, journal = run_live(with_patch, 1)

    async def patch_removed(x: int) -> int:
        return await after(await new_path(x))

    with pytest.raises(NondeterminismError, match="deprecate_patch") as info:
        replay(patch_removed, journal, 1)
    assert info.value.position == 1
    assert "patched of patch 'bonus'" in info.value.recorded


def test_deprecate_patch_consumes_old_markers_and_writes_none() -> None:
    async def deprecated(x: int) -> int:
        keel.deprecate_patch("bonus")  # the old branch is gone
        return await after(await new_path(x))

    _, with_marker = run_live(with_patch, 1)
    assert result(replay(deprecated, with_marker, 1)) == b"202"
    ex, fresh = run_live(deprecated, 1)
    assert result(ex) == b"202" and markers(fresh) == []
    assert result(replay(deprecated, fresh, 1)) == b"202"


def test_patched_after_deprecate_patch_fails_the_run() -> None:
    async def both() -> bool:
        keel.deprecate_patch("bonus")
        return keel.patched("bonus")

    ex = Execution("r", both, (), {}, [STARTED], FixedLive())
    ex.start()
    assert ex.outcome is not None and ex.outcome.status == "failed"
    assert isinstance(ex.outcome.error, keel.WorkflowError)
    assert "deprecate_patch" in str(ex.outcome.error)


@pytest.mark.parametrize("name", ["", "a#b", 3, None, "x" * 201])
def test_bad_patch_names_are_rejected_at_the_call(name: object) -> None:
    with pytest.raises(keel.ConfigurationError, match="patch name"):
        keel.patched(name)  # type: ignore[arg-type]
    with pytest.raises(keel.ConfigurationError, match="patch name"):
        keel.deprecate_patch(name)  # type: ignore[arg-type]

    async def bad() -> bool:
        return keel.patched(name)  # type: ignore[arg-type]

    ex = Execution("r", bad, (), {}, [STARTED], FixedLive())
    ex.start()
    assert ex.outcome is not None and isinstance(ex.outcome.error, keel.ConfigurationError)
    assert markers(ex.journal) == []


def test_outside_a_workflow_the_new_path_runs() -> None:
    assert keel.patched("bonus") is True
    assert keel.deprecate_patch("bonus") is None  # type: ignore[func-returns-value]
