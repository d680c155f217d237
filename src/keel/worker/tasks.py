"""Dispatched steps on the task side: claim tasks of the served queues, run
each attempt with the step's function, report the outcome under the task lease.

A run whose step has a ``queue`` does not run it: its driver inserts a task
(with the journal write that records the dispatch) and suspends. A worker
serving that queue claims the task, runs one attempt, and completes or fails
it; the store wakes the run, whose driver journals the task's outcome.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from keel.core import codec
from keel.errors import ConfigurationError, LeaseLostError, SerializationError, error_info
from keel.observe import metrics, tracing
from keel.store._checks import check_queue_name
from keel.store.base import TaskLease, TaskRecord
from keel.worker.step_runner import run_attempt
from keel.workflow.context import StepInfo, _step_info, discard_attempt
from keel.workflow.definitions import StepDef
from keel.workflow.registry import default_registry

if TYPE_CHECKING:
    from keel.worker.worker import Worker

log = logging.getLogger("keel.worker")

#: Seconds before a task whose step is not registered in this worker is tried again.
UNKNOWN_STEP_RETRY = 5.0

#: The ``workflow`` label of a dispatched step's attempt: the task row does not
#: name the run's workflow, and reading it per attempt would cost a round trip.
_QUEUED = ""
#: Runs whose trace context a task runner remembers (see TaskRunner._traceparent).
_TRACEPARENTS_KEPT = 1024


def queue_limits(
    queues: Mapping[str, int] | Sequence[str] | None, task_concurrency: int
) -> dict[str, int]:
    """Validate ``Worker(queues=...)``: queue name -> this worker's limit for it."""
    if queues is None:
        return {}
    if isinstance(queues, str | bytes):
        raise ConfigurationError(
            f"queues must be a list of queue names or a mapping of name to limit, not {queues!r}"
        )
    items: list[tuple[object, object]]
    if isinstance(queues, Mapping):
        items = list(queues.items())
    else:
        items = [(name, task_concurrency) for name in queues]
    limits: dict[str, int] = {}
    for name, limit in items:
        name = check_queue_name(name)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigurationError(
                f"limit of queue {name!r} must be a positive integer, not {limit!r}"
            )
        if name in limits:
            raise ConfigurationError(f"queue {name!r} is given twice")
        limits[name] = limit
    return limits


@dataclass(eq=False)
class _Running:
    lease: TaskLease
    task: TaskRecord
    job: asyncio.Task[None] | None = None
    info: StepInfo | None = None
    lost: bool = False
    failed: BaseException | None = None  # how the attempt failed, if it raised


class TaskRunner:
    """The task side of one worker: its claim loop, running attempts, heartbeats."""

    def __init__(self, worker: Worker, limits: dict[str, int], concurrency: int) -> None:
        self.worker = worker
        self.store = worker.store
        self.limits = limits
        self.concurrency = concurrency
        self.running: dict[int, _Running] = {}
        self._wake = asyncio.Event()
        # The trace context of each run whose tasks ran here lately: it never
        # changes, so a run's later task attempts read it once, not each time.
        self._traceparents: dict[str, str | None] = {}

    @property
    def serves(self) -> bool:
        return bool(self.limits)

    def wake(self) -> None:
        self._wake.set()

    # --- claiming -----------------------------------------------------------------------
    def _free(self) -> tuple[int, dict[str, int]]:
        capacity = self.concurrency - len(self.running)
        busy: dict[str, int] = {}
        for item in self.running.values():
            busy[item.task.queue] = busy.get(item.task.queue, 0) + 1
        free = {q: limit - busy.get(q, 0) for q, limit in self.limits.items()}
        return capacity, {q: n for q, n in free.items() if n > 0}

    async def _claim(self) -> int:
        """Claim what the limits allow; return how many tasks were claimed."""
        capacity, free = self._free()
        if capacity <= 0 or not free:
            return 0
        got = 0
        # Queues with room for a whole batch are claimed together (priorities
        # compare across them); a queue closer to its limit is claimed alone, so
        # one claim can never take more of it than its limit allows.
        wide = [q for q, n in free.items() if n >= capacity]
        narrow = [q for q, n in free.items() if n < capacity]
        random.shuffle(narrow)  # no queue always goes last
        groups: list[tuple[list[str], int]] = [(wide, capacity)] if wide else []
        groups += [([q], free[q]) for q in narrow]
        for names, room in groups:
            limit = min(room, self.concurrency - len(self.running))
            if limit <= 0 or self.worker.draining:
                break
            asked = time.perf_counter()
            claimed = await self.store.tasks.claim(
                self.worker.owner, names, limit=limit, ttl=self.worker.lease_ttl
            )
            metrics.claimed("task", time.perf_counter() - asked)
            now = time.time()  # the store clock of SQLite; PostgreSQL's within clock skew
            for lease, record in claimed:
                metrics.queue_waited(record.queue, now - record.available_at)
                self._start(lease, record)
            got += len(claimed)
        return got

    async def loop(self) -> None:
        """Claim due tasks of the served queues until the worker drains."""
        while not self.worker.draining:
            got = 0
            try:
                got = await self._claim()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.worker.give_up(exc):
                    return
                log.exception("claiming tasks failed; retrying")
                await asyncio.sleep(self.worker.poll_interval)
                continue
            capacity, free = self._free()
            if got and capacity > 0 and free:
                continue  # there may be more due tasks
            self._wake.clear()
            loop = asyncio.get_running_loop()
            waiter = loop.create_task(self._wake.wait())
            changed = loop.create_task(self.store.changes.wait(self.worker.poll_interval))
            try:
                await asyncio.wait({waiter, changed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                changed.cancel()

    # --- running attempts -----------------------------------------------------------------
    def _start(self, lease: TaskLease, record: TaskRecord) -> None:
        item = _Running(lease, record)
        self.running[record.task_id] = item
        info = StepInfo(
            run_id=record.run_id,
            step=record.step,
            attempt=record.attempt,
            idempotency_key=f"{record.run_id}:{record.command}",
        )
        item.info = info
        ctx = contextvars.copy_context()
        ctx.run(_step_info.set, info)  # keel.current_step() inside the step
        item.job = asyncio.get_running_loop().create_task(
            self._execute(item, info), name=f"keel-task-{record.task_id}", context=ctx
        )

    def _find_step(self, name: str) -> StepDef[Any, Any] | None:
        return self.worker.registry.find_step(name) or default_registry.find_step(name)

    async def _execute(self, item: _Running, info: StepInfo) -> None:
        """Run one task attempt; with tracing on, in a ``keel.step`` span that
        continues the trace stored with the task's run."""
        if not tracing.enabled():
            await self._execute_task(item, info)
            return
        record = item.task
        parent = await self._traceparent(record.run_id)
        span = tracing.begin_step(
            record.run_id,
            "",  # the run's workflow is not on the task; the run id leads to it
            record.step,
            record.attempt,
            queue=record.queue,
            parent=parent,
        )
        error: BaseException | None = None
        try:
            await self._execute_task(item, info)
        except BaseException as exc:
            error = exc
            raise
        finally:
            tracing.end_step(span, error or item.failed)

    async def _traceparent(self, run_id: str) -> str | None:
        if run_id in self._traceparents:
            return self._traceparents[run_id]
        try:
            parent = await tracing.stored_traceparent(self.store, run_id)
        except Exception as exc:  # tracing must never stop an attempt
            log.debug("run %s: could not read its trace context: %s", run_id, exc)
            return None  # not remembered: the next attempt tries again
        if len(self._traceparents) >= _TRACEPARENTS_KEPT:
            del self._traceparents[next(iter(self._traceparents))]  # the oldest
        self._traceparents[run_id] = parent
        return parent

    async def _execute_task(self, item: _Running, info: StepInfo) -> None:
        record = item.task
        try:
            step = self._find_step(record.step)
            if step is None:
                exc = ConfigurationError(
                    f"step {record.step!r} is not registered in worker {self.worker.owner} "
                    f"(serving queue {record.queue!r})"
                )
                log.error(
                    "task %s of run %s: %s",
                    record.task_id,
                    record.run_id,
                    exc,
                    extra=_fields(record),
                )
                retry = record.attempt < record.max_attempts
                await self._fail(item, exc, UNKNOWN_STEP_RETRY if retry else None)
                return
            started, outcome = time.perf_counter(), "cancelled"
            try:
                value = await run_attempt(step, record.args, info, self.worker.step_pool)
                data = codec.encode(value, what=f"result of step {record.step!r}")
                outcome = "ok"
            except asyncio.CancelledError:
                raise  # lease lost or drain cut it off: the lease expires, no write
            except SerializationError as exc:  # cannot be stored or decoded: no retry
                outcome, item.failed = "error", exc
                await self._fail(item, exc, None)
                return
            except Exception as exc:
                outcome, item.failed = "error", exc
                await self._fail(item, exc, self._retry_delay(step, record, exc))
                return
            finally:
                seconds = time.perf_counter() - started
                metrics.step_attempt_ended(_QUEUED, record.step, seconds, outcome)
            await self.store.tasks.complete(item.lease, data)
        except LeaseLostError as exc:
            log.warning(
                "task %s of run %s: %s", record.task_id, record.run_id, exc, extra=_fields(record)
            )
        except asyncio.CancelledError:
            if not item.lost:
                log.warning(
                    "task %s of run %s: attempt %d cut off; its lease will expire",
                    record.task_id,
                    record.run_id,
                    record.attempt,
                    extra=_fields(record),
                )
        except Exception:
            log.exception(
                "task %s of run %s: could not report the attempt",
                record.task_id,
                record.run_id,
                extra=_fields(record),
            )
        finally:
            if self.running.get(record.task_id) is item:
                del self.running[record.task_id]
            self._wake.set()  # capacity freed

    @staticmethod
    def _retry_delay(step: StepDef[Any, Any], record: TaskRecord, exc: Exception) -> float | None:
        """Seconds until the next attempt, or ``None`` when the step fails for good.

        The task's ``max_attempts`` (from the policy the call was made with) bounds
        the attempts; the registered step's policy decides what is retryable and
        how long to wait.
        """
        policy = step.retry
        if record.attempt >= record.max_attempts:
            return None
        if isinstance(exc, policy.non_retryable):
            return None
        return policy.delay(record.attempt, random.random())

    async def _fail(self, item: _Running, exc: Exception, delay: float | None) -> None:
        error = msgspec.json.encode(error_info(exc))
        retry_at = None if delay is None else await self.store.now() + delay
        await self.store.tasks.fail(item.lease, error, retry_at)

    # --- heartbeats and drain ---------------------------------------------------------------
    async def renew(self) -> None:
        """Extend the leases of running attempts; cut off the attempts whose lease is lost."""
        items = list(self.running.values())
        if not items:
            return
        lost = await self.store.tasks.renew(
            self.worker.owner, [i.lease for i in items], self.worker.lease_ttl
        )
        for item in items:
            if item.task.task_id in lost and self.running.get(item.task.task_id) is item:
                log.warning(
                    "task %s of run %s: task lease lost; stopping attempt %d",
                    item.task.task_id,
                    item.task.run_id,
                    item.task.attempt,
                    extra=_fields(item.task),
                )
                item.lost = True
                if item.info is not None:
                    discard_attempt(item.info)  # a sync step can see it and stop
                if item.job is not None:
                    item.job.cancel()

    def jobs(self) -> list[asyncio.Task[None]]:
        return [i.job for i in self.running.values() if i.job is not None]


def _fields(record: TaskRecord) -> dict[str, Any]:
    """The structured fields of a record about a task's attempt (see keel.observe.logs)."""
    return {
        "run_id": record.run_id,
        "step": record.step,
        "attempt": record.attempt,
        "task_id": record.task_id,
        "queue": record.queue,
    }
