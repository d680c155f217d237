"""Workflows whose runs, recorded by an earlier Keel, must finish under the current one.

``make_fixtures.py`` records runs of these workflows in many in-flight states
(``data/``); ``test_previous_release.py`` opens those databases with the
current code and lets a worker finish them. Only the public API is used
(``import keel``): internal module paths may move, these names may not.

Do not edit the workflow functions: a run is resumed only by the version it
recorded, and a version is a hash of the function's source, so an edited body
leaves the recorded runs waiting for a version no worker has (the test's
failure names it). Change them only together with new fixtures
(``python -m tests.compat.make_fixtures``). Step functions may change freely as
long as they return what the expectations say.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import keel

#: Durable sleep and retry delay of the runs that must be due by test time.
#: Longer than a worker's ``inline_wait`` (1 s), so the runs suspend durably.
SLEEP_SECONDS = 5.0
RETRY_SECONDS = 5.0
#: A signal wait's timeout that never fires (fixtures may be years old).
NEVER = timedelta(days=36500)
QUEUE = "compat-queue"
#: Set only in the fixture's doomed worker process: ``compat_stall`` writes this
#: file and hangs there until the process is killed.
STALL_ENV = "KEEL_COMPAT_STALL_FILE"
LAST_TURN = 2  # compat_counter continues as new until this turn


@dataclass
class Decision:
    by: str


class BookingRejected(Exception):
    """Raised by compat_booking: its saga undoes the reservation."""


class FlakyError(Exception):
    """compat_flaky's first attempt."""


# --- steps -------------------------------------------------------------------------
@keel.step
def compat_double(x: int) -> int:
    return 2 * x


@keel.step
async def compat_total(values: list[int]) -> int:
    return sum(values)


@keel.step
async def compat_echo(text: str) -> str:
    return text


@keel.step
def compat_note(text: str) -> str:
    return f"noted {text}"


@keel.step(retry=keel.RetryPolicy(max_attempts=3, initial_interval=RETRY_SECONDS, jitter=0))
def compat_flaky(label: str) -> str:
    info = keel.current_step()
    attempt = info.attempt if info is not None else 1
    if attempt == 1:
        raise FlakyError(f"{label}: attempt 1 fails")
    return f"{label}: ok on attempt {attempt}"


@keel.step(queue=QUEUE)
def compat_square(x: int) -> int:
    return x * x


@keel.step
def compat_release(hold: str) -> str:
    return f"released {hold}"


@keel.step(compensate=compat_release)
def compat_reserve(hold: str) -> str:
    return f"held {hold}"


@keel.step(idempotency_key=lambda order: f"compat-pay-{order}")
def compat_pay(order: str) -> str:
    # The process id tells a reused result (the fixture's process) from a new run.
    return f"paid {order} by process {os.getpid()}"


@keel.step
def compat_stall(x: int) -> int:
    mark = os.environ.get(STALL_ENV)
    if mark:  # the fixture's doomed worker: say the attempt started, then hang
        Path(mark).write_text(str(os.getpid()))
        time.sleep(3600)
    return x + 1


def _nonce() -> str:
    return secrets.token_hex(4)


# --- workflows ---------------------------------------------------------------------
@keel.workflow
async def compat_sum(values: list[int]) -> int:
    doubled = await asyncio.gather(*(compat_double.aio(v) for v in values))
    return await compat_total.aio(list(doubled))


@keel.workflow
async def compat_timer(label: str) -> str:
    values = (
        f"{keel.now().isoformat()} {keel.uuid4()} {keel.random()!r} "
        f"{await keel.side_effect(_nonce)}"
    )
    echoed = await compat_echo.aio(values)
    await keel.sleep(SLEEP_SECONDS)
    # `echoed` is the journaled result; `values` what replay gave back this time.
    return f"{label}: woke; journaled values {'replayed' if echoed == values else 'CHANGED'}"


@keel.workflow(version="compat-1")
async def compat_approval(order: str) -> str:
    if keel.patched("compat-audit"):
        await compat_note.aio(f"audit {order}")
    try:
        decision = await keel.wait_for_signal("approve", type=Decision, timeout=NEVER)
    except keel.WorkflowCancelled:
        await compat_note.aio(f"cleanup {order}")
        raise
    return f"{order}: approved by {decision.by}"


@keel.workflow
async def compat_flaky_flow(label: str) -> str:
    return await compat_flaky.aio(label)


@keel.workflow
async def compat_child(label: str) -> str:
    word = await keel.wait_for_signal("release", type=str)
    return f"{label}:{word}"


@keel.workflow
async def compat_parent(label: str) -> str:
    first = await keel.run_child(compat_child, f"{label}-a")
    second = await keel.start_child(compat_child, f"{label}-b")
    return f"{first} + {await second.result()}"


@keel.workflow
async def compat_counter(turn: int, total: int = 0) -> int:
    total += await keel.wait_for_signal("add", type=int)
    if turn < LAST_TURN:
        keel.continue_as_new(turn + 1, total=total)
    return total


@keel.workflow
async def compat_dispatch(x: int) -> int:
    return await compat_square.aio(x) + 1


@keel.workflow
async def compat_booking(order: str) -> str:
    async with keel.saga():
        held = await compat_reserve.aio(f"room-{order}")
        decision = await keel.wait_for_signal("decision", type=str)
        if decision != "confirm":
            raise BookingRejected(f"{order} rejected: {decision}")
    return f"{held}; confirmed"


@keel.workflow
async def compat_checkout(order: str) -> str:
    return await compat_pay.aio(order)


@keel.workflow(snapshot_every=4)
async def compat_looper(n: int) -> int:
    total = 0
    for i in range(n):
        total += await compat_double.aio(i)
    await keel.wait_for_signal("finish")
    return total


@keel.workflow
async def compat_doomed(x: int) -> int:
    doubled = await compat_double.aio(x)
    return await compat_stall.aio(doubled)
