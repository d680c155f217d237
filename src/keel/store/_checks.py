"""Argument checks shared by every backend.

The backends keep their own SQL; what is here is the part of the contract that
is not storage: how arguments are validated (listing runs, its filters and
cursors: :mod:`keel.store._pages`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Iterable, Sequence
from functools import lru_cache

from keel.core.events import EventType, TimerFired, encode_data
from keel.core.facts import is_digest, value_digest
from keel.core.states import TERMINAL_STATES, RunState, can_transition
from keel.errors import (
    ConfigurationError,
    FactDigestError,
    IllegalTransitionError,
    LeaseLostError,
    RunExistsError,
    StoreError,
)
from keel.store._pages import where_filter
from keel.store.base import (
    BulkAct,
    EventRecord,
    NewEvent,
    NewFork,
    NewRun,
    NewSchedule,
    NewSnapshot,
    NewTask,
    RunFilter,
    RunWhere,
    TaskLease,
)
from keel.store.ports import Continue, Finish, Suspend


def check_ttl(ttl: float) -> None:
    """Lease TTLs are positive seconds."""
    if not ttl > 0:
        raise ValueError(f"lease ttl must be positive, not {ttl!r}")


def check_move(run_id: str, src: RunState, dst: RunState) -> None:
    """Every change of a run's state goes along :data:`~keel.core.states.TRANSITIONS`."""
    if not can_transition(src, dst):
        raise IllegalTransitionError(f"run {run_id!r} cannot move from {src.value} to {dst.value}")


def check_end(run_id: str, end: Suspend | Finish | Continue | None) -> RunState:
    """The state a fenced commit ending with ``end`` leaves its (running) run in.

    A :class:`Finish` ends a run for good: its state is ``completed``, ``failed``
    or ``cancelled``. ``continued`` needs a successor, so only :class:`Continue`
    reaches it. Checked before anything is written.
    """
    if end is None:
        return RunState.RUNNING
    if isinstance(end, Suspend):
        dst = RunState.SUSPENDED
    elif isinstance(end, Continue):
        dst = RunState.CONTINUED
    else:
        dst = RunState(end.state)
        if not dst.is_terminal or dst is RunState.CONTINUED:
            raise IllegalTransitionError(
                f"run {run_id!r} cannot finish in state {dst.value}: a Finish needs "
                "completed, failed or cancelled (continued comes with a Continue)"
            )
    check_move(run_id, RunState.RUNNING, dst)
    return dst


def check_idle_for(idle_for: float | None) -> None:
    """``resume``'s ``idle_for``: ``None`` or non-negative seconds."""
    if idle_for is not None and (
        isinstance(idle_for, bool)
        or not isinstance(idle_for, int | float)
        or not math.isfinite(idle_for)
        or idle_for < 0
    ):
        raise ConfigurationError(f"idle_for must be None or seconds >= 0, not {idle_for!r}")


def check_append(run_id: str, next_seq: int, append: Sequence[object], at_seq: int | None) -> None:
    """Events an operator action appends go exactly where the caller read the end."""
    if append and at_seq != next_seq:
        raise StoreError(
            f"journal of run {run_id!r} continues at seq {next_seq}, not {at_seq}: "
            "it moved on since it was read; try again"
        )


def check_fork(run: NewRun) -> tuple[str, int]:
    """A forked run names its original and the seq its copy stops at (at least 1:
    the original's ``run_started`` is never copied, the fork has its own)."""
    if run.forked_from is None or run.fork_seq is None:
        raise ConfigurationError(f"run {run.run_id!r} is not a fork (forked_from, fork_seq)")
    if isinstance(run.fork_seq, bool) or run.fork_seq < 1:
        raise ConfigurationError(f"fork_seq must be at least 1, not {run.fork_seq!r}")
    return run.forked_from, run.fork_seq


#: What one ``prune`` call deletes at most.
MAX_PRUNE_BATCH = 10_000


def check_prune(
    ended_before: float, states: Collection[RunState] | None, limit: int
) -> frozenset[RunState]:
    """``prune``'s arguments; the ended states it may select."""
    if (
        isinstance(ended_before, bool)
        or not isinstance(ended_before, int | float)
        or not math.isfinite(ended_before)
    ):
        raise ConfigurationError(f"ended_before must be finite epoch seconds, not {ended_before!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PRUNE_BATCH:
        raise ConfigurationError(f"prune limit must be 1..{MAX_PRUNE_BATCH}, not {limit!r}")
    if states is None:
        return TERMINAL_STATES
    try:
        wanted = frozenset(RunState(s) for s in ([states] if isinstance(states, str) else states))
    except ValueError:
        raise ConfigurationError(f"unknown run state in {states!r}") from None
    live = sorted(s.value for s in wanted if not s.is_terminal)
    if live:
        raise ConfigurationError(f"only ended runs are pruned, not runs {', '.join(live)}")
    if wanted == {RunState.CONTINUED}:
        # A chain's continued runs go with its last run: select by how it ended.
        raise ConfigurationError(
            "a continue-as-new chain is pruned whole, by the state its last run ended "
            "in: select completed, failed, cancelled or terminated, not only continued"
        )
    return wanted or TERMINAL_STATES


def check_terminal(state: RunState) -> None:
    """The old ``finish_run`` check, kept until the SQL backends move to :func:`check_end`."""
    if not RunState(state).is_terminal:
        raise ValueError(f"finish_run needs a terminal state, not {state!s}")


# -- facts ---------------------------------------------------------------------------


def check_fact(digest: str, data: bytes) -> bytes:
    """A fact as every backend stores it: bytes whose sha256 is ``digest``.

    Returns ``data`` as ``bytes`` (a ``bytearray`` or ``memoryview`` is copied once).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise FactDigestError(f"a fact's data must be bytes, not {type(data).__name__}")
    check_digest(digest)
    data = bytes(data)
    actual = value_digest(data)
    if actual != digest:
        raise FactDigestError(
            f"fact data of {len(data)} bytes hashes to {actual}, not to the digest {digest!r}"
        )
    return data


def check_digest(digest: object) -> str:
    """A digest: 64 lowercase hex digits (a sha256)."""
    if not is_digest(digest):
        raise FactDigestError(f"not a fact digest (64 lowercase hex digits): {digest!r}")
    return str(digest)


def check_digests(digests: Collection[str]) -> list[str]:
    """The digests of ``load_many``, checked, deduplicated and sorted."""
    if isinstance(digests, str | bytes):
        raise TypeError(f"digests must be a collection of digests, not {digests!r}")
    return sorted({check_digest(d) for d in digests})


# -- dispatched steps ----------------------------------------------------------------

#: ``TaskRecord.error`` of an attempt whose task lease expired (the SQL backends
#: build the same JSON object in SQL; see their claim_tasks queries).
LEASE_EXPIRED_TYPE = "keel.errors.StepTimeoutError"


def lease_expired_error(attempt: int, *, final: bool) -> bytes:
    """Encoded error info of a task attempt lost to an expired lease."""
    message = f"task lease expired on attempt {attempt}"
    if final:
        message += " and no attempts are left"
    return json.dumps(
        {"type": LEASE_EXPIRED_TYPE, "message": message, "traceback": ""},
        separators=(",", ":"),
    ).encode()


def check_queues(queues: Collection[str]) -> list[str]:
    """The queue names to claim from, deduplicated and sorted (a bare str is a mistake)."""
    if isinstance(queues, str | bytes):
        raise TypeError(f"queues must be a collection of queue names, not {queues!r}")
    return sorted(set(queues))


def check_queue_name(queue: object) -> str:
    """A queue name as stored with tasks: non-empty, at most 200 chars, no '#'."""
    if not isinstance(queue, str) or not queue or "#" in queue or len(queue) > 200:
        raise ConfigurationError(
            f"queue name must be a non-empty string without '#' (at most 200 chars): {queue!r}"
        )
    return queue


def check_queue_limit(queue: str, concurrency: int | None) -> None:
    check_queue_name(queue)
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 0
    ):
        raise ConfigurationError(
            f"concurrency of queue {queue!r} must be an integer >= 0 (0 pauses the queue) "
            f"or None, not {concurrency!r}"
        )


def check_claim_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"claim limit must be at least 1, not {limit}")


def check_tasks(run_id: str, tasks: Sequence[NewTask]) -> None:
    """Refuse a dispatch that could only half succeed: bad attempts or a repeated command."""
    seen: set[str] = set()
    for task in tasks:
        if task.max_attempts < 1:
            raise ValueError(
                f"task {task.command!r} needs max_attempts of at least 1, not {task.max_attempts}"
            )
        if task.command in seen:
            raise StoreError(f"run {run_id!r} dispatches command {task.command!r} twice")
        seen.add(task.command)


def check_children(children: Sequence[NewRun]) -> None:
    """Refuse child runs that repeat a run id among themselves (``RunExistsError``)."""
    seen: set[str] = set()
    repeated = []
    for child in children:
        if child.run_id in seen:
            repeated.append(child.run_id)
        seen.add(child.run_id)
    if repeated:
        raise RunExistsError(repeated)


def duplicate_task(run_id: str, commands: Collection[str]) -> StoreError:
    return StoreError(
        f"run {run_id!r} already has a task for one of the commands {sorted(commands)}"
    )


def task_fence_error(
    lease: TaskLease,
    now: float,
    row: tuple[str, str, str | None, int, float | None] | None,
) -> StoreError:
    """Why a fenced task write matched nothing; ``row`` is (run_id, state, lease_owner,
    attempt, lease_expires_at) of the task, or ``None`` if it does not exist."""
    if row is None:
        return LeaseLostError(
            "<unknown>", lease.attempt, "the task does not exist", task_id=lease.task_id
        )
    run_id, state, owner, attempt, expires_at = row
    if attempt != lease.attempt:
        detail = f"the task is at attempt {attempt} now ({state})"
    elif state != "leased":
        detail = f"the task is {state}"
    elif owner != lease.owner:
        detail = f"the task is leased to {owner!r}"
    elif expires_at is None or expires_at < now:
        detail = "the task lease expired"
    else:  # it changed back between the two queries
        return StoreError(f"fenced write to task {lease.task_id} matched no row; retry it")
    return LeaseLostError(run_id, lease.attempt, detail, task_id=lease.task_id)


# -- schedules -----------------------------------------------------------------------

OVERLAP_POLICIES = ("allow", "skip")


def check_schedule(schedule: NewSchedule) -> None:
    """Refuse a schedule the store could not fire: the client checks these for users."""
    if not schedule.schedule_id:
        raise ValueError("a schedule needs a non-empty schedule_id")
    if (schedule.cron is None) == (schedule.at is None):
        raise ValueError(f"schedule {schedule.schedule_id!r} needs exactly one of cron and at")
    if schedule.overlap not in OVERLAP_POLICIES:
        raise ValueError(f"overlap must be one of {OVERLAP_POLICIES}, not {schedule.overlap!r}")
    if schedule.catchup_window is not None and not schedule.catchup_window > 0:
        raise ValueError(f"catchup_window must be positive, not {schedule.catchup_window!r}")


def check_fire(expected: float, tick: float) -> None:
    """A tick fired for a due ``next_fire_at`` is that time or a later missed tick."""
    if tick < expected:
        raise ValueError(f"tick {tick!r} is before the due time {expected!r}")


def check_snapshot(snapshot: NewSnapshot, next_seq: int) -> None:
    """A snapshot covers journal events that exist: ``0 <= upto_seq < next_seq``."""
    if not 0 <= snapshot.upto_seq < next_seq:
        raise StoreError(
            f"a snapshot up to seq {snapshot.upto_seq} needs a journal that continues "
            f"past it, but it continues at seq {next_seq}"
        )


#: Rows of ``worker_versions`` last seen longer ago than this are deleted.
VERSION_ROWS_KEPT = 86400.0


def check_versions(versions: Collection[tuple[str, str]] | None) -> list[tuple[str, str]] | None:
    """The ``(workflow, version)`` pairs of a claim filter or a registration, sorted."""
    if versions is None:
        return None
    if isinstance(versions, str | bytes) or not isinstance(versions, Collection):
        raise TypeError(
            f"versions must be a collection of (workflow, version) pairs, not {versions!r}"
        )
    pairs = set()
    for pair in versions:
        if (
            not isinstance(pair, tuple)
            or len(pair) != 2
            or not all(isinstance(p, str) for p in pair)
        ):
            raise TypeError(f"versions must hold (workflow, version) string pairs, not {pair!r}")
        pairs.add(pair)
    return sorted(pairs)


def versions_json(versions: Collection[tuple[str, str]] | None) -> str | None:
    """The claim filter as the SQL backends take it: a JSON array of pairs, or None
    (any version). A worker passes the same frozenset every time: encoded once."""
    if versions is None:
        return None
    if isinstance(versions, frozenset):
        return _frozen_json(versions)
    return json.dumps(check_versions(versions))


@lru_cache(maxsize=16)
def _frozen_json(versions: frozenset[tuple[str, str]]) -> str:
    return json.dumps(check_versions(versions))


def check_registration(worker: str, host: str, pid: int, live_for: float) -> None:
    """Arguments of ``register_versions`` besides the pairs."""
    for name, value in (("worker", worker), ("host", host)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a string, not {value!r}")
    if not worker:
        raise ConfigurationError("worker must be a non-empty string")
    if isinstance(pid, bool) or not isinstance(pid, int):
        raise TypeError(f"pid must be an int, not {pid!r}")
    if isinstance(live_for, bool) or not isinstance(live_for, int | float) or not live_for > 0:
        raise ConfigurationError(f"live_for must be a positive number, not {live_for!r}")


def spec_conflict(workflow: str, version: str) -> StoreError:
    """Saving a spec other than the one stored under ``(workflow, version)``: a
    version is the digest of its spec, so the other bytes are not that graph's."""
    return StoreError(
        f"graph {workflow!r} version {version!r} has another spec stored; a version is "
        "the digest of its spec, so this spec is not that version's (nothing was written)"
    )


# -- bulk actions --------------------------------------------------------------------

#: Most runs one bulk page may act on (one transaction holds them all).
MAX_BULK_PAGE = 1000


def check_bulk(
    act: BulkAct, run_ids: Sequence[str] | None, where: RunWhere | None, limit: int
) -> tuple[list[str] | None, RunFilter]:
    """``admin.bulk``'s arguments: the run ids of the page (``None``: select by
    the filter) and the filter."""
    if act.action not in ("cancel", "terminate", "resume"):
        raise ConfigurationError(f"unknown bulk action {act.action!r}")
    if act.action != "resume" and act.event is None:
        raise ConfigurationError(f"bulk {act.action} needs its event")
    if act.action == "resume":
        check_idle_for(act.idle_for)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_BULK_PAGE:
        raise ConfigurationError(f"bulk page limit must be 1..{MAX_BULK_PAGE}, not {limit!r}")
    if run_ids is None:
        return None, where_filter(where or {})
    if isinstance(run_ids, str) or where:
        raise ConfigurationError("a bulk page takes run_ids (a list) or where, not both")
    ids = list(run_ids)
    if len(ids) > limit or not all(isinstance(i, str) for i in ids):
        raise ConfigurationError(f"a bulk page takes at most {limit} run ids (strs)")
    return ids, RunFilter()


def check_forks(forks: Sequence[NewFork]) -> list[tuple[str, int]]:
    """``fork_many``'s forks, each checked as ``fork`` checks it: (original, fork_seq)."""
    if isinstance(forks, str) or len(forks) > MAX_BULK_PAGE:
        raise ConfigurationError(f"fork_many takes a sequence of at most {MAX_BULK_PAGE} forks")
    return [check_fork(f.run) for f in forks]


def timers_to_fire(journal: Iterable[EventRecord]) -> list[NewEvent]:
    """``timer_fired`` for each sleep of ``journal`` that started and has not
    fired, in order (an operator's resume with ``fire_timers``)."""
    events = list(journal)
    fired = {e.command for e in events if e.type == EventType.TIMER_FIRED.value}
    data = encode_data(TimerFired())
    return [
        NewEvent(EventType.TIMER_FIRED.value, e.command, data)
        for e in events
        if e.type == EventType.TIMER_STARTED.value
        and e.command is not None
        and e.command not in fired
    ]
