"""Conformance tests for schedules (mixed into StoreConformance).

Times are relative to ``await store.now()``: a due tick is a second in the
past, a future one an hour ahead, so no test waits for the clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from keel.core.states import RunState
from keel.errors import ScheduleExistsError, ScheduleNotFoundError
from keel.store.base import NewEvent, NewRun, NewSchedule, ScheduleRecord
from keel.store.ports import Store
from keel.testing.conformance_helpers import (
    StoreFactory,
    run_with_store,
)

HOUR = 3600.0


def new_schedule(
    schedule_id: str,
    next_fire_at: float,
    *,
    workflow: str = "wf",
    cron: str | None = "* * * * *",
    overlap: str = "allow",
) -> NewSchedule:
    """A cron schedule (or a one-shot at ``next_fire_at`` with ``cron=None``)."""
    return NewSchedule(
        schedule_id=schedule_id,
        workflow=workflow,
        input=b'{"n":1}',
        cron=cron,
        at=None if cron is not None else next_fire_at,
        timezone="Europe/Paris",
        next_fire_at=next_fire_at,
        overlap=overlap,
        catchup_window=None if cron is None else 60.0,
    )


def tick_run(run_id: str, workflow: str = "wf") -> NewRun:
    data = b'{"n":1}'
    return NewRun(run_id, workflow, "v1", data, NewEvent("run_started", None, data))


async def schedule_of(store: Store, schedule_id: str) -> ScheduleRecord:
    schedule = await store.schedules.get(schedule_id)
    assert schedule is not None
    return schedule


async def due_ids(store: Store, workflows: tuple[str, ...] = ("wf",), limit: int = 50) -> list[str]:
    return [s.schedule_id for s in (await store.schedules.due(workflows, limit=limit)).due]


class ScheduleConformance:
    """Every backend stores, lists, pauses and fires schedules alike, each tick once."""

    def test_create_get_and_list_schedules(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            now = await store.now()
            made = await store.schedules.create(new_schedule("b", now + HOUR))
            assert made == await schedule_of(store, "b")
            assert (made.schedule_id, made.workflow, made.input) == ("b", "wf", b'{"n":1}')
            assert (made.cron, made.at, made.timezone) == ("* * * * *", None, "Europe/Paris")
            assert (made.next_fire_at, made.paused, made.overlap) == (now + HOUR, False, "allow")
            assert made.catchup_window == 60.0
            assert made.last_fire_at is None and made.last_run_id is None
            assert now - 5 <= made.created_at == made.updated_at <= now + 5
            once = await store.schedules.create(
                new_schedule("a", now + 2 * HOUR, workflow="other", cron=None)
            )
            assert (once.cron, once.at, once.next_fire_at) == (None, now + 2 * HOUR, now + 2 * HOUR)
            assert [s.schedule_id for s in await store.schedules.list()] == ["a", "b"]
            assert await store.schedules.list(workflow="other") == [once]
            assert await store.schedules.list(workflow="none") == []
            assert await store.schedules.get("c") is None

        run_with_store(store_factory, body)

    def test_duplicate_schedule_id_is_refused_and_changes_nothing(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            now = await store.now()
            first = await store.schedules.create(new_schedule("s", now + HOUR))
            with pytest.raises(ScheduleExistsError) as err:
                await store.schedules.create(new_schedule("s", now + 5, workflow="other"))
            assert err.value.schedule_id == "s"
            assert await store.schedules.list() == [first]

        run_with_store(store_factory, body)

    def test_bad_schedules_are_refused(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            now = await store.now()
            good = new_schedule("s", now)
            for bad in (
                NewSchedule("", "wf", b"{}", "* * * * *", None, "UTC", now),
                NewSchedule("s", "wf", b"{}", None, None, "UTC", now),
                NewSchedule("s", "wf", b"{}", "* * * * *", now, "UTC", now),
                NewSchedule("s", "wf", b"{}", "* * * * *", None, "UTC", now, overlap="queue"),
                NewSchedule("s", "wf", b"{}", "* * * * *", None, "UTC", now, catchup_window=0),
            ):
                with pytest.raises(ValueError):
                    await store.schedules.create(bad)
            assert await store.schedules.list() == []
            await store.schedules.create(good)
            with pytest.raises(ValueError, match="before the due time"):
                await store.schedules.fire(
                    "s", expected=now, tick=now - 1, next_fire_at=None, run=None
                )
            with pytest.raises(ValueError):
                await store.schedules.due(["wf"], limit=0)

        run_with_store(store_factory, body)

    def test_unknown_schedule_ids_raise(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            for action in (
                store.schedules.pause("nope"),
                store.schedules.resume("nope", None),
                store.schedules.delete("nope"),
            ):
                with pytest.raises(ScheduleNotFoundError, match="nope"):
                    await action

        run_with_store(store_factory, body)

    def test_due_schedules_are_the_active_due_ones_of_the_given_workflows(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            now = await store.now()
            await store.schedules.create(new_schedule("later", now + HOUR))
            found = await store.schedules.due(["wf"], limit=10)
            assert found.due == [] and found.next_fire_at == now + HOUR
            assert now - 5 <= found.now <= now + 5
            await store.schedules.create(new_schedule("due2", now - 1))
            await store.schedules.create(new_schedule("due1", now - 2))
            await store.schedules.create(new_schedule("other", now - 3, workflow="x"))
            await store.schedules.create(new_schedule("paused", now - 4))
            await store.schedules.pause("paused")
            found = await store.schedules.due(["wf"], limit=10)
            assert [s.schedule_id for s in found.due] == ["due1", "due2"]  # earliest first
            assert found.next_fire_at == now - 2
            assert found.due[0] == await schedule_of(store, "due1")
            assert await due_ids(store, ("wf", "x")) == ["other", "due1", "due2"]
            assert await due_ids(store, ("wf", "x"), limit=1) == ["other"]
            assert await due_ids(store, ()) == []
            assert (await store.schedules.due(["y"], limit=10)).next_fire_at is None

        run_with_store(store_factory, body)

    def test_fire_starts_the_run_and_advances_exactly_once(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            now = await store.now()
            await store.schedules.create(new_schedule("s", now - 1))
            fire = {"expected": now - 1, "tick": now - 1, "next_fire_at": now + 59.0}
            assert await store.schedules.fire("s", **fire, run=tick_run("s@1"))
            run = await store.reads.get_run("s@1")
            assert run is not None and run.state is RunState.PENDING
            assert (run.workflow, run.version, run.input) == ("wf", "v1", b'{"n":1}')
            assert run.wake_at is not None and run.wake_at <= await store.now()
            [started] = await store.reads.history("s@1")
            assert (started.seq, started.type) == (0, "run_started")
            schedule = await schedule_of(store, "s")
            assert (schedule.next_fire_at, schedule.last_fire_at) == (now + 59.0, now - 1)
            assert schedule.last_run_id == "s@1"
            # The same tick again (a second worker that read it as due): nothing.
            assert not await store.schedules.fire("s", **fire, run=tick_run("s@1b"))
            assert await store.reads.get_run("s@1b") is None
            assert await schedule_of(store, "s") == schedule
            assert await due_ids(store) == []
            claimed = await store.runs.claim("w1", limit=10, ttl=30.0)
            assert [c.run.run_id for c in claimed] == ["s@1"]  # a due run like any other

        run_with_store(store_factory, body)

    def test_fire_needs_an_active_schedule_at_the_expected_due_time(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            now = await store.now()
            await store.schedules.create(new_schedule("s", now - 1))
            await store.schedules.create(new_schedule("future", now + HOUR))

            async def fire(schedule_id: str, expected: float, tick: float) -> bool:
                run = tick_run(f"{schedule_id}@{tick}")
                return await store.schedules.fire(
                    schedule_id, expected=expected, tick=tick, next_fire_at=now + HOUR, run=run
                )

            assert not await fire("s", now - 2, now - 1)  # another time was due
            assert not await fire("future", now + HOUR, now + HOUR)  # not due yet
            assert not await fire("gone", now - 1, now - 1)
            await store.schedules.pause("s")
            assert not await fire("s", now - 1, now - 1)
            assert (await store.reads.list_runs()).runs == []
            assert (await schedule_of(store, "s")).next_fire_at == now - 1

        run_with_store(store_factory, body)

    def test_a_tick_without_a_run_is_skipped(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            now = await store.now()
            await store.schedules.create(new_schedule("s", now - 1))
            assert await store.schedules.fire(
                "s", expected=now - 1, tick=now - 1, next_fire_at=now + 60, run=None
            )
            schedule = await schedule_of(store, "s")
            assert schedule.next_fire_at == now + 60
            assert schedule.last_fire_at is None and schedule.last_run_id is None
            assert (await store.reads.list_runs()).runs == []

        run_with_store(store_factory, body)

    def test_a_tick_whose_run_exists_advances_without_a_second_run(
        self, store_factory: StoreFactory
    ) -> None:
        async def body(store: Store) -> None:
            # A crash between a worker's fire and ... nothing: it is one transaction.
            # But a run id derived from the tick may exist (started by hand, or by a
            # schedule deleted and created again): the tick must not start it twice.
            now = await store.now()
            first, _, _ = await store.runs.create(tick_run("s@t", workflow="old"))
            await store.schedules.create(new_schedule("s", now - 1))
            assert await store.schedules.fire(
                "s", expected=now - 1, tick=now - 1, next_fire_at=now + 60, run=tick_run("s@t")
            )
            assert await store.reads.get_run("s@t") == first
            assert len(await store.reads.history("s@t")) == 1
            assert (await schedule_of(store, "s")).last_run_id == "s@t"

        run_with_store(store_factory, body)

    def test_a_one_shot_fires_once_then_is_done(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            now = await store.now()
            await store.schedules.create(new_schedule("once", now - 1, cron=None))
            assert await due_ids(store) == ["once"]
            assert await store.schedules.fire(
                "once", expected=now - 1, tick=now - 1, next_fire_at=None, run=tick_run("once@t")
            )
            done = await schedule_of(store, "once")
            assert done.next_fire_at is None and done.last_run_id == "once@t"
            found = await store.schedules.due(["wf"], limit=10)
            assert found.due == [] and found.next_fire_at is None
            assert not await store.schedules.fire(
                "once", expected=now - 1, tick=now - 1, next_fire_at=None, run=tick_run("again")
            )
            assert [r.run_id for r in (await store.reads.list_runs()).runs] == ["once@t"]

        run_with_store(store_factory, body)

    def test_concurrent_fires_of_one_tick_start_one_run(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            now = await store.now()
            await store.schedules.create(new_schedule("s", now - 1))
            # Racers that read the same due tick; each proposes its own run id, as
            # racers computing "now" a moment apart might.
            results = await asyncio.gather(
                *(
                    store.schedules.fire(
                        "s",
                        expected=now - 1,
                        tick=now - 1,
                        next_fire_at=now + 60 + i,
                        run=tick_run(f"s@{i}"),
                    )
                    for i in range(20)
                )
            )
            assert sum(results) == 1
            winner = results.index(True)
            assert [r.run_id for r in (await store.reads.list_runs()).runs] == [f"s@{winner}"]
            schedule = await schedule_of(store, "s")
            assert (schedule.next_fire_at, schedule.last_run_id) == (
                now + 60 + winner,
                f"s@{winner}",
            )

        run_with_store(store_factory, body)

    def test_pause_and_resume(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            now = await store.now()
            await store.schedules.create(new_schedule("s", now - 1))
            paused = await store.schedules.pause("s")
            assert paused.paused and paused.next_fire_at == now - 1
            assert await store.schedules.pause("s") == paused  # idempotent
            assert await due_ids(store) == []
            assert (await store.schedules.due(["wf"], limit=5)).next_fire_at is None
            resumed = await store.schedules.resume("s", now + 30)
            assert not resumed.paused and resumed.next_fire_at == now + 30
            assert await schedule_of(store, "s") == resumed
            # Resuming an active schedule changes nothing (its next time stays).
            assert await store.schedules.resume("s", now + 999) == resumed

        run_with_store(store_factory, body)

    def test_delete_removes_the_schedule_not_its_runs(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            now = await store.now()
            await store.schedules.create(new_schedule("s", now - 1))
            await store.schedules.fire(
                "s", expected=now - 1, tick=now - 1, next_fire_at=now + 60, run=tick_run("s@t")
            )
            await store.schedules.delete("s")
            assert await store.schedules.get("s") is None
            assert await store.schedules.list() == []
            assert await store.reads.get_run("s@t") is not None
            assert not await store.schedules.fire(
                "s", expected=now + 60, tick=now + 60, next_fire_at=None, run=tick_run("x")
            )
            with pytest.raises(ScheduleNotFoundError):
                await store.schedules.delete("s")
            await store.schedules.create(new_schedule("s", now + 1))  # the id is free again

        run_with_store(store_factory, body)

    def test_schedules_survive_closing_the_store(self, store_factory: StoreFactory) -> None:
        async def body(store: Store) -> None:
            now = await store.now()
            await store.schedules.create(new_schedule("s", now - 1))
            await store.schedules.fire(
                "s", expected=now - 1, tick=now - 1, next_fire_at=now + 60, run=tick_run("s@t")
            )
            await store.schedules.pause("s")
            before = await schedule_of(store, "s")
            await store.close()
            await store.open()
            assert await store.schedules.get("s") == before
            assert await store.reads.get_run("s@t") is not None

        run_with_store(store_factory, body)

    def test_creating_or_resuming_a_schedule_wakes_waiters(
        self, store_factory: StoreFactory
    ) -> None:
        # Schedule loops sleep until the earliest next fire time: a new (or
        # resumed) schedule may be due sooner, so they must be woken.
        async def body(store: Store) -> None:
            now = await store.now()
            await store.schedules.create(new_schedule("s", now + HOUR))
            await store.schedules.pause("s")
            changes: list[Callable[[], Awaitable[ScheduleRecord]]] = [
                lambda: store.schedules.create(new_schedule("t", now + HOUR)),
                lambda: store.schedules.resume("s", now + 1),
            ]
            for change in changes:
                await store.changes.wait(0.05)  # absorb earlier notices
                waiter = asyncio.ensure_future(store.changes.wait(30))
                await asyncio.sleep(0.02)
                await change()
                await asyncio.wait_for(waiter, 10)

        run_with_store(store_factory, body)
