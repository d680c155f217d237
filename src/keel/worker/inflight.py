"""The work a driver runs in this worker for its run: step attempts, and waits
for timers and retries due within the worker's ``inline_wait``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Container, Coroutine, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Literal

from keel.core.commands import Command
from keel.store.ports import Store
from keel.worker.plan.steps import Ended
from keel.worker.step_runner import Keyed, start_attempt
from keel.workflow.context import StepInfo, discard_attempt


@dataclass(frozen=True, slots=True)
class Abandoned:
    """A step attempt this worker stopped waiting for: its result will not be
    journaled, so the step runs again (on this worker or another)."""

    run_id: str
    step: str
    attempt: int
    where: str  # "workflow NAME" (inline) or "queue NAME" (a dispatched step's task)

    def __str__(self) -> str:
        return f"run {self.run_id} ({self.where}) step {self.step!r} attempt {self.attempt}"


@dataclass
class Running:
    """One piece of in-flight work, by the key of its command."""

    key: str
    what: Literal["attempt", "timer", "retry"]
    attempt: int
    task: asyncio.Task[Any]
    info: StepInfo | None = None  # attempts: what the running step sees
    started_at: float | None = None  # attempts: when it started, on this worker's clock

    def ended(self) -> Ended:
        """How a finished attempt ended."""
        task = self.task
        if task.cancelled():
            return Ended(error=asyncio.CancelledError())
        exc = task.exception()
        return Ended(error=exc) if exc is not None else Ended(value=task.result())


def _gone() -> bool:
    return True


def _not_held() -> bool:
    return False


class Inflight:
    """One run's in-flight work, and the wait for the next piece of it to end
    (or for :meth:`wake`)."""

    def __init__(
        self,
        run_id: str,
        workflow: str,
        store: Store,
        pool: Executor,
        *,
        expired: Callable[[], bool],
        leased: Callable[[], bool],
        sleep: Callable[[float], Coroutine[Any, Any, None]] = asyncio.sleep,
    ) -> None:
        self.run_id = run_id
        self.workflow = workflow
        self.store = store
        self.pool = pool
        self._expired = expired  # whether the lease ran out (a step's cancel_requested())
        self._leased = leased  # asked before an async step's body resumes
        self._sleep = sleep  # the worker's clock: timers and retries are workflow time
        self.items: dict[str, Running] = {}
        self.poke = asyncio.Event()
        self._on_poke: Callable[[], None] | None = None

    def __contains__(self, key: object) -> bool:
        return key in self.items

    def __bool__(self) -> bool:
        return bool(self.items)

    def __iter__(self) -> Iterator[Running]:
        return iter(list(self.items.values()))

    def start_attempt(self, cmd: Command, attempt: int) -> None:
        info = StepInfo(
            run_id=self.run_id,
            step=cmd.id.name,
            attempt=attempt,
            idempotency_key=f"{self.run_id}:{cmd.key}",
            _expired=self._expired,
        )
        key = cmd.idempotency_key
        keyed = (
            Keyed(self.store, cmd.id.name, key, cmd.target.key_max_age) if key is not None else None
        )
        started_at = time.time()
        task = start_attempt(
            cmd.target,
            cmd.args,
            info,
            self.pool,
            on_done=self._attempt_done,
            keyed=keyed,
            leased=self._leased,
            workflow=self.workflow,
        )
        self.items[cmd.key] = Running(cmd.key, "attempt", attempt, task, info, started_at)

    def start_wait(self, cmd: Command, what: Literal["timer", "retry"], delay: float) -> None:
        task = asyncio.get_running_loop().create_task(self._sleep(max(0.0, delay)))
        self.items[cmd.key] = Running(cmd.key, what, cmd.attempts + 1, task)

    def _attempt_done(self) -> None:
        """An attempt's task is ending: wake :meth:`wait` if it waits."""
        if self._on_poke is not None:
            self._on_poke()

    def wake(self) -> None:
        """Interrupt a wait (cancel request, drain)."""
        self.poke.set()
        if self._on_poke is not None:
            self._on_poke()

    async def wait(self) -> None:
        """Until a piece of work has ended or :meth:`wake` was called."""
        items = self.items.values()
        if not self.poke.is_set() and not any(item.task.done() for item in items):
            # One future woken by whichever comes first: a finished task or a poke.
            # Attempt tasks call it themselves as they end (_attempt_done);
            # timer and retry waits through a done-callback.
            wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            def wake_up(_: object = None) -> None:
                if not wake.done():
                    wake.set_result(None)

            waits = [item.task for item in items if item.what != "attempt"]
            for t in waits:
                t.add_done_callback(wake_up)
            self._on_poke = wake_up
            try:
                await wake
            finally:
                self._on_poke = None
                for t in waits:
                    t.remove_done_callback(wake_up)
        self.poke.clear()

    def take_done(self) -> list[Running]:
        """The work that has ended, taken off the table."""
        done = [item for item in self.items.values() if item.task.done()]
        for item in done:
            del self.items[item.key]
        return done

    def keep_only(self, keys: Container[str]) -> None:
        """Stop the work of commands not in ``keys`` (discarded by a cancel
        request); a sync step can see it and stop."""
        for key, item in list(self.items.items()):
            if key not in keys:
                del self.items[key]
                if item.info is not None:
                    discard_attempt(item.info)
                item.task.cancel()

    def stop_waits(self) -> None:
        """Stop the timer and retry waits (the worker is draining)."""
        for item in list(self.items.values()):
            if item.what != "attempt":
                item.task.cancel()
                del self.items[item.key]

    def cancel(self) -> None:
        """Cancel every piece of work (the run has ended; its results are moot)."""
        for item in self.items.values():
            item.task.cancel()

    def attempts(self) -> list[Abandoned]:
        """The step attempts started and not journaled (what stopping the run abandons)."""
        return [
            Abandoned(self.run_id, item.info.step, item.attempt, f"workflow {self.workflow}")
            for item in self.items.values()
            if item.info is not None
        ]

    def close(self) -> None:
        """The driver is done with the run: let go of its callbacks, which point
        back at it. Without this the driver, its execution and everything they
        hold form a reference cycle that the garbage collector keeps walking
        until a full collection frees it. Anything that
        still asks (a sync step's ``cancel_requested()``) hears the lease is gone."""
        self._expired = _gone
        self._leased = _not_held
        self._on_poke = None

    def abandon(self) -> list[Abandoned]:
        """Cancel all the work; a sync step body (which Python cannot stop)
        sees ``keel.cancel_requested()``. Its result is never journaled."""
        running = self.attempts()
        for item in self.items.values():
            if item.info is not None:
                discard_attempt(item.info)
            item.task.cancel()
        self.items.clear()
        return running
