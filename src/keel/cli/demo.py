"""``keel demo``: run the order workflow in-process and show its journal as it grows."""

from __future__ import annotations

import asyncio
import shlex
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

from rich.console import Console
from rich.status import Status
from rich.text import Text

from keel import demo_app as app
from keel.cli.common import CliError
from keel.cli.render import Timeline, compact, print_timeline
from keel.client import Client, HistoryEvent
from keel.core import codec
from keel.core.events import EventType
from keel.core.redact import redact
from keel.core.states import RunState
from keel.store import open_store
from keel.worker import Worker

POLL = 0.1  # seconds between looks at the journal
DEADLINE = 30.0  # the demo gives up (with an error) after this long


@dataclass(frozen=True)
class DemoTiming:
    """How long the demo waits: the warehouse sleep must exceed the worker's
    ``inline_wait`` (0.5 s) so the run really suspends and resumes."""

    warehouse_delay: float
    approve_after: float

    @classmethod
    def pick(cls, fast: bool) -> DemoTiming:
        return cls(0.8, 0.2) if fast else cls(2.0, 0.8)


async def run_demo(db: str, shown_db: str, *, fast: bool, console: Console) -> str:
    """Start one order run on ``db``, follow it live, print its timeline; return its id.

    ``shown_db`` is how ``db`` is printed (its password masked).
    """
    timing = DemoTiming.pick(fast)
    shown_db = redact(shown_db)
    worker = Worker(open_store(db), inline_wait=0.5, poll_interval=POLL, lease_ttl=10.0)
    async with worker:
        client: Client = worker.client()
        order = app.Order(f"A-{uuid.uuid4().hex[:6].upper()}", "KEEL-MUG", 2, 2400)
        handle = await client.start(
            app.process_order, order, warehouse_delay=timing.warehouse_delay
        )
        run_id = handle.run_id
        console.print(
            Text.assemble(
                ("keel demo", "bold"),
                f": order {order.order_id} as run ",
                (run_id, "bold cyan"),
                f" on {shown_db}",
            )
        )
        console.print(
            Text(
                "reserve → charge (flaky: 2 retries) → durable sleep → wait for signal "
                "'approve' → ship → now()\n",
                style="dim",
            )
        )
        await _follow(client, run_id, timing, console)
        result = await client.result(run_id, timeout=5.0)
        events = await client.history(run_id)
    console.print(Text(f"\nhistory of run {run_id} ({len(events)} journal events):", style="bold"))
    print_timeline(console, events)
    console.print(Text("\nresult:", style="bold"))
    console.print_json(codec.encode(result).decode())
    console.print(
        f"\ninspect it again: keel runs history {run_id} --db {shlex.quote(shown_db)}",
        highlight=False,
    )
    return run_id


async def _follow(client: Client, run_id: str, timing: DemoTiming, console: Console) -> None:
    """Print journal events as they land; send the approval once the run waits for it."""
    timeline = Timeline(name_width=18)
    seen = 0
    suspended_at = -1  # journal length when we last reported a suspension
    approve_at: float | None = None
    deadline = time.monotonic() + DEADLINE
    with Status("running the order workflow…", console=console) as status:
        while True:
            events = await client.history(run_id)
            if len(events) > seen and suspended_at == seen:
                console.print(
                    timeline.note("run resumed: a worker claimed it and replayed its journal")
                )
            for event in events[seen:]:
                console.print(timeline.row(event))
                if event.type == EventType.TIMER_STARTED:
                    status.update("waiting for the warehouse (durable sleep)…")
                elif event.type == EventType.SIGNAL_AWAITED and approve_at is None:
                    approve_at = time.monotonic() + timing.approve_after
                    status.update("waiting for approval…")
            seen = len(events)
            info = await client.get(run_id)
            if info.state.is_terminal and events and events[-1].type in _RUN_ENDS:
                return
            if info.state is RunState.SUSPENDED and suspended_at != seen:
                suspended_at = seen
                console.print(timeline.note(_suspended(timeline, info.wake_at, events)))
            if approve_at is not None and time.monotonic() >= approve_at:
                approve_at = float("inf")  # once
                approval = app.Approval(approved_by="ops@example.com")
                note = f"client sends signal 'approve' {compact(approval)}"
                console.print(timeline.note(note, symbol="→", style="cyan"))
                await client.signal(run_id, "approve", approval)
                status.update("approved; shipping…")
            if time.monotonic() > deadline:
                raise CliError(f"the demo run {run_id} did not finish within {DEADLINE:g}s")
            await asyncio.sleep(POLL)


_RUN_ENDS = frozenset({EventType.RUN_COMPLETED, EventType.RUN_FAILED, EventType.RUN_CANCELLED})


def _suspended(timeline: Timeline, wake_at: datetime | None, events: list[HistoryEvent]) -> str:
    waiting_signal = bool(events) and events[-1].type == EventType.SIGNAL_AWAITED
    wake = "" if wake_at is None else f"; wakes at {timeline.relative(wake_at)}"
    return (
        "run suspended: no worker holds it"
        + wake
        + (" or when a signal arrives" if waiting_signal else "")
    )
