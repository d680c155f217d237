"""Record the "previous release" databases that ``test_previous_release.py`` finishes.

Run by hand, from the repository root, with the release whose databases must
keep working (its ``src/`` unchanged), PostgreSQL reachable as for the tests::

    .venv/bin/python -m tests.compat.make_fixtures

It plays one scenario of ``compat_app`` on a new SQLite file and on a new
PostgreSQL database, leaving runs in many states (``RUNS`` below says which),
and writes:

- ``data/sqlite/keel.db``: the SQLite file, closed cleanly (no ``-wal`` left);
- ``data/postgres.sql``: ``pg_dump --no-owner --no-privileges --inserts`` of the
  PostgreSQL database, without psql meta-commands, so that psycopg can load it
  into an empty database (checked here: it is loaded into a scratch database
  and opened);
- ``data/expected.json``: every run's state as recorded and how it must end,
  the signals the test sends, the schedules and queue limits, and the commit
  and schema versions that made the files.

The runs that must be due when the test runs (a durable sleep, a step retry)
are started last and the worker stops at once: the script fails if they moved
on before it stopped (a machine too busy to stop a worker within
``compat_app.SLEEP_SECONDS``); run it again then.

``--doomed URL`` is internal: the worker process that the scenario kills with
SIGKILL while it holds a run (lease held, second step running).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

import keel
from tests import pg
from tests.compat import compat_app as app
from tests.compat.pg_load import load_dump

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DATA = HERE / "data"
SQLITE_FIXTURE = DATA / "sqlite" / "keel.db"
POSTGRES_FIXTURE = DATA / "postgres.sql"
EXPECTED = DATA / "expected.json"

DOOMED_OWNER = "compat-doomed-worker"
DOOMED_TTL = 2.0  # the killed worker's lease has long expired when the test runs
ONCE_AT = "2026-01-01T00:00:00+00:00"  # a one-shot in the past: fires when a worker looks
ONCE_RUN = "compat-once@2026-01-01T00:00:00Z"  # its run id: <schedule id>@<tick in UTC>
DEADLINE = 30.0


@dataclass
class Scenario:
    """What one recording produced: expectations, and what the test must send."""

    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    signals: list[dict[str, Any]] = field(default_factory=list)

    def expect(
        self,
        run_id: str,
        workflow: str,
        recorded: str | None,
        state: str,
        *,
        result: Any = None,
        error: tuple[str, str] | None = None,
        continued_to: str | None = None,
        history: Sequence[tuple[str, str, int]] = (),
        why: str,
    ) -> None:
        """``recorded``: the state in the fixture (None: the run does not exist yet)."""
        entry: dict[str, Any] = {
            "workflow": workflow,
            "why": why,
            "recorded_state": recorded,
            "state": state,
        }
        if state == "completed":
            entry["result"] = result
        if error is not None:
            entry["error"] = {"type": error[0], "message": error[1]}
        if continued_to is not None:
            entry["continued_to"] = continued_to
        if history:
            # (event type, command name, how many): events the journal must hold
            entry["history"] = [list(h) for h in history]
        self.runs[run_id] = entry

    def send(self, run_id: str, name: str, payload: Any, delivery_id: str) -> None:
        self.signals.append(
            {"run_id": run_id, "name": name, "payload": payload, "delivery_id": delivery_id}
        )


async def until(probe: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait for ``probe()`` to be true, failing after ``DEADLINE`` seconds."""
    deadline = time.monotonic() + DEADLINE
    while not await probe():
        if time.monotonic() > deadline:
            raise SystemExit(f"make_fixtures: timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def state_of(client: keel.Client, run_id: str) -> str | None:
    try:
        return (await client.get(run_id)).state.value
    except keel.RunNotFoundError:
        return None


async def until_state(client: keel.Client, run_id: str, *states: str) -> None:
    async def probe() -> bool:
        return await state_of(client, run_id) in states

    await until(probe, f"run {run_id} to be {'/'.join(states)}")


async def history(client: keel.Client, run_id: str) -> list[tuple[str, str | None]]:
    return [(e.type, e.name) for e in await client.history(run_id)]


def child_id(parent: str, n: int) -> str:
    """A child's run id as README documents it: ``<parent>/child:<workflow>#<n>``."""
    return f"{parent}/child:compat_child#{n}"


def successor_id(first: str, generation: int) -> str:
    """A continue-as-new successor's id: ``<first run id>/continue:<generation>``."""
    return f"{first}/continue:{generation}"


# --- the scenario ---------------------------------------------------------------------
async def with_worker(url: str, s: Scenario) -> None:
    """Phase 1: one in-process worker (no queues, no schedules) makes most states."""
    worker = keel.Worker(url, poll_interval=0.05, schedules=False)
    async with worker:
        client = worker.client()

        # Runs that end now: their histories must still read later.
        await (await client.start(app.compat_sum, [1, 2, 3], run_id="compat-sum-done")).result(30)
        s.expect(
            "compat-sum-done",
            "compat_sum",
            "completed",
            "completed",
            result=12,
            why="completed at fixture time",
        )
        receipt = await (
            await client.start(app.compat_checkout, "o-7", run_id="compat-pay-first")
        ).result(30)
        s.expect(
            "compat-pay-first",
            "compat_checkout",
            "completed",
            "completed",
            result=receipt,
            why="completed at fixture time; stored its step's idempotency key",
        )
        s.expect(
            "compat-pay-again",
            "compat_checkout",
            "pending",
            "completed",
            result=receipt,
            why="pending; its step's idempotency key has a stored result to reuse",
        )

        await client.start(app.compat_approval, "a-done", run_id="compat-approval-done")
        await until_state(client, "compat-approval-done", "suspended")
        await client.signal("compat-approval-done", "approve", {"by": "ana"})
        await until_state(client, "compat-approval-done", "completed")
        s.expect(
            "compat-approval-done",
            "compat_approval",
            "completed",
            "completed",
            result="a-done: approved by ana",
            history=[("patched", "compat-audit", 1)],
            why="patch marker, signal; completed at fixture time",
        )

        await client.start(app.compat_approval, "a-cancel", run_id="compat-approval-cancelled")
        await until_state(client, "compat-approval-cancelled", "suspended")
        await client.cancel("compat-approval-cancelled")
        await until_state(client, "compat-approval-cancelled", "cancelled")
        s.expect(
            "compat-approval-cancelled",
            "compat_approval",
            "cancelled",
            "cancelled",
            history=[("step_completed", "compat_note", 2), ("cancel_requested", "", 1)],
            why="cancelled at fixture time; its cleanup step ran",
        )

        await client.start(app.compat_booking, "b-rejected", run_id="compat-booking-rejected")
        await until_state(client, "compat-booking-rejected", "suspended")
        await client.signal("compat-booking-rejected", "decision", "no")
        await until_state(client, "compat-booking-rejected", "failed")
        s.expect(
            "compat-booking-rejected",
            "compat_booking",
            "failed",
            "failed",
            error=("tests.compat.compat_app.BookingRejected", "b-rejected rejected: no"),
            history=[("step_completed", "compat_release", 1)],
            why="failed at fixture time; its saga compensation ran",
        )

        # Runs left waiting for a signal.
        for rid, order, by in [
            ("compat-approval-waiting", "a-wait", "cy"),
            ("compat-approval-buffered", "a-buffered", None),
            ("compat-approval-cancel-pending", "a-cancel-pending", None),
        ]:
            await client.start(app.compat_approval, order, run_id=rid)
            await until_state(client, rid, "suspended")
            if by is not None:
                s.send(rid, "approve", {"by": by}, f"{rid}-approve")
        s.expect(
            "compat-approval-waiting",
            "compat_approval",
            "suspended",
            "completed",
            result="a-wait: approved by cy",
            history=[("patched", "compat-audit", 1)],
            why="suspended on a signal wait (with a timer); the test sends the signal",
        )
        s.expect(
            "compat-approval-buffered",
            "compat_approval",
            "suspended",
            "completed",
            result="a-buffered: approved by bo",
            why="suspended; its signal is buffered in the mailbox, not consumed",
        )
        s.expect(
            "compat-approval-cancel-pending",
            "compat_approval",
            "suspended",
            "cancelled",
            history=[("step_completed", "compat_note", 2), ("cancel_requested", "", 1)],
            why="suspended with a cancel request not yet delivered; cleanup runs",
        )

        for rid, order, decision in [
            ("compat-booking-confirm", "b-confirm", "confirm"),
            ("compat-booking-reject", "b-reject", "no"),
        ]:
            await client.start(app.compat_booking, order, run_id=rid)
            await until_state(client, rid, "suspended")
            s.send(rid, "decision", decision, f"{rid}-decision")
        s.expect(
            "compat-booking-confirm",
            "compat_booking",
            "suspended",
            "completed",
            result="held room-b-confirm; confirmed",
            history=[("step_completed", "compat_release", 0)],
            why="saga block in flight; confirmed: nothing undone",
        )
        s.expect(
            "compat-booking-reject",
            "compat_booking",
            "suspended",
            "failed",
            error=("tests.compat.compat_app.BookingRejected", "b-reject rejected: no"),
            history=[("step_completed", "compat_release", 1)],
            why="saga block in flight; rejected: the recorded compensation runs",
        )

        # A parent waiting on its second child (the first has completed).
        parent, kid_a, kid_b = (
            "compat-parent",
            child_id("compat-parent", 0),
            child_id("compat-parent", 1),
        )
        await client.start(app.compat_parent, "p", run_id=parent)
        await until_state(client, kid_a, "suspended")
        await client.signal(kid_a, "release", "one")
        await until_state(client, kid_b, "suspended")
        await until_state(client, parent, "suspended")
        s.send(kid_b, "release", "two", "compat-kid-b-release")
        s.expect(
            parent,
            "compat_parent",
            "suspended",
            "completed",
            result="p-a:one + p-b:two",
            history=[("child_started", "compat_child", 2)],
            why="parent suspended on its second child",
        )
        s.expect(
            kid_a,
            "compat_child",
            "completed",
            "completed",
            result="p-a:one",
            why="first child, completed at fixture time",
        )
        s.expect(
            kid_b,
            "compat_child",
            "suspended",
            "completed",
            result="p-b:two",
            why="second child, waiting for a signal",
        )

        # A continue-as-new chain at its second run, with a signal buffered for it.
        chain = "compat-counter"
        await client.start(app.compat_counter, 0, run_id=chain)
        await until_state(client, chain, "suspended")
        await client.signal(chain, "add", 1)
        await until_state(client, successor_id(chain, 1), "suspended")
        s.send(chain, "add", 3, "compat-counter-add-3")  # to the chain: reaches its tip
        s.expect(
            chain,
            "compat_counter",
            "continued",
            "continued",
            continued_to=successor_id(chain, 1),
            why="first run of a chain, continued",
        )
        s.expect(
            successor_id(chain, 1),
            "compat_counter",
            "suspended",
            "continued",
            continued_to=successor_id(chain, 2),
            why="second run of the chain; a signal is buffered for it",
        )
        s.expect(
            successor_id(chain, 2),
            "compat_counter",
            None,
            "completed",
            result=6,
            why="the chain's last run, made by the current code",
        )

        # A dispatched step queued; this worker serves no queue.
        await client.set_queue_limit(app.QUEUE, 2)
        await client.start(app.compat_dispatch, 7, run_id="compat-dispatch")
        await until_state(client, "compat-dispatch", "suspended")
        s.expect(
            "compat-dispatch",
            "compat_dispatch",
            "suspended",
            "completed",
            result=50,
            history=[("step_dispatched", "compat_square", 1)],
            why="its step is a task queued on compat-queue, never claimed",
        )

        # A run with a snapshot of its replay state, waiting for a signal.
        await client.start(app.compat_looper, 6, run_id="compat-looper")
        await until_state(client, "compat-looper", "suspended")
        if await worker.store.load_snapshot("compat-looper") is None:
            raise SystemExit("make_fixtures: compat-looper has no snapshot")
        s.send("compat-looper", "finish", None, "compat-looper-finish")
        s.expect(
            "compat-looper",
            "compat_looper",
            "suspended",
            "completed",
            result=30,
            history=[("step_completed", "compat_double", 6)],
            why="has a stored snapshot; waits for a signal",
        )

        # Schedules: a one-shot in the past (no worker here fires schedules), a
        # paused cron, an active cron whose missed tick the test's worker fires.
        await client.schedule(app.compat_sum, [10, 20], at=ONCE_AT, schedule_id="compat-once")
        s.expect(
            ONCE_RUN,
            "compat_sum",
            None,
            "completed",
            result=60,
            why="the one-shot schedule's run, fired by the current code",
        )
        await client.schedule(
            app.compat_sum,
            [5],
            cron="0 9 * * MON-FRI",
            timezone="Europe/Paris",
            schedule_id="compat-paused",
        )
        await client.pause_schedule("compat-paused")
        await client.schedule(
            app.compat_sum, [1], cron="* * * * *", schedule_id="compat-every-minute"
        )

        # Last, because they must not come due before the worker stops.
        await client.start(app.compat_timer, "timer", run_id="compat-timer")
        await client.start(app.compat_flaky_flow, "flaky", run_id="compat-flaky")
        await until_state(client, "compat-timer", "suspended")
        await until_state(client, "compat-flaky", "suspended")
    s.expect(
        "compat-timer",
        "compat_timer",
        "suspended",
        "completed",
        result="timer: woke; journaled values replayed",
        history=[
            ("side_effect", "now", 1),
            ("side_effect", "uuid4", 1),
            ("side_effect", "random", 1),
            ("side_effect", "_nonce", 1),
            ("timer_fired", "sleep", 1),
        ],
        why="suspended on a durable sleep that is due",
    )
    s.expect(
        "compat-flaky",
        "compat_flaky_flow",
        "suspended",
        "completed",
        result="flaky: ok on attempt 2",
        history=[("step_attempt_failed", "compat_flaky", 1)],
        why="its step failed attempt 1 and waits for the retry",
    )


async def without_worker(url: str, s: Scenario) -> None:
    """Phase 2: no worker runs: signals buffered, a cancel request, pending runs."""
    async with keel.Client(url) as client:
        await client.signal(
            "compat-approval-buffered",
            "approve",
            {"by": "bo"},
            delivery_id="compat-approval-buffered-approve",
        )
        await client.signal("compat-counter", "add", 2, delivery_id="compat-counter-add-2")
        await client.cancel("compat-approval-cancel-pending")
        await client.start(app.compat_sum, [4, 5], run_id="compat-pending")
        await client.start(app.compat_checkout, "o-7", run_id="compat-pay-again")
    s.expect(
        "compat-pending",
        "compat_sum",
        "pending",
        "completed",
        result=18,
        why="created, never claimed",
    )


def kill_doomed_worker(url: str, s: Scenario, scratch: Path) -> None:
    """Phase 3: a worker process takes compat-doomed and is SIGKILLed in its second step."""
    mark = scratch / "stalled"
    mark.unlink(missing_ok=True)
    env = {**os.environ, app.STALL_ENV: str(mark), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.compat.make_fixtures", "--doomed", url], cwd=REPO, env=env
    )
    try:
        deadline = time.monotonic() + DEADLINE
        while not mark.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("make_fixtures: the doomed worker never reached compat_stall")
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    s.expect(
        "compat-doomed",
        "compat_doomed",
        "running",
        "completed",
        result=11,
        history=[("step_completed", "compat_double", 1)],
        why="held by a worker killed in its second step; the lease has expired",
    )


async def doomed(url: str) -> None:
    """The process :func:`kill_doomed_worker` kills: a worker of compat_doomed only."""
    registry = keel.Registry()
    registry.add(app.compat_doomed)
    worker = keel.Worker(
        url,
        registry=registry,
        lease_ttl=DOOMED_TTL,
        owner=DOOMED_OWNER,
        poll_interval=0.05,
        schedules=False,
    )
    await worker.start()
    await worker.client().start(app.compat_doomed, 5, run_id="compat-doomed")
    await asyncio.Event().wait()  # compat_stall hangs until the process is killed


async def check_recorded(url: str, s: Scenario) -> None:
    """Every run is in the state the scenario meant to leave it in."""
    async with keel.Client(url) as client:
        for rid, entry in s.runs.items():
            got = await state_of(client, rid)
            if got != entry["recorded_state"]:
                raise SystemExit(
                    f"make_fixtures: {rid} is {got}, not {entry['recorded_state']}: "
                    "a due run moved on before the worker stopped? run it again"
                )
        for rid, event in [
            ("compat-timer", ("timer_fired", "sleep")),
            ("compat-flaky", ("step_completed", "compat_flaky")),
        ]:
            if event in await history(client, rid):
                raise SystemExit(f"make_fixtures: {rid} went on before the worker stopped")
        doomed_info = await client.get("compat-doomed")
        if doomed_info.lease_owner != DOOMED_OWNER:
            raise SystemExit(f"make_fixtures: compat-doomed is held by {doomed_info.lease_owner}")


async def record(url: str, scratch: Path) -> Scenario:
    s = Scenario()
    await with_worker(url, s)
    await without_worker(url, s)
    kill_doomed_worker(url, s, scratch)
    await check_recorded(url, s)
    return s


# --- the two backends -------------------------------------------------------------------
def make_sqlite(scratch: Path) -> tuple[Scenario, int]:
    path = scratch / "keel.db"
    scenario = asyncio.run(record(f"sqlite:///{path}", scratch))
    # Every connection is closed: SQLite has checkpointed the WAL into the file.
    for suffix in ("-wal", "-shm", "-journal"):
        if Path(f"{path}{suffix}").exists():
            raise SystemExit(f"make_fixtures: {path}{suffix} remains; the file is incomplete")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        version = int(
            conn.execute("SELECT value FROM keel_meta WHERE key = 'schema_version'").fetchone()[0]
        )
    conn.close()
    SQLITE_FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, SQLITE_FIXTURE)
    return scenario, version


#: psql meta-commands (pg_dump 15.14+ writes \restrict and \unrestrict): not SQL.
_META = re.compile(r"^\\.*\n?", re.MULTILINE)


def make_postgres(scratch: Path) -> tuple[Scenario, int]:
    if (reason := pg.unavailable_reason()) is not None:
        raise SystemExit(f"make_fixtures: PostgreSQL unavailable at {pg.server_url()}: {reason}")
    url = pg.empty_database_url()
    try:
        scenario = asyncio.run(record(url, scratch))
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT value FROM keel.keel_meta WHERE key = 'schema_version'"
            ).fetchone()
        assert row is not None
        dump = subprocess.run(
            ["pg_dump", "--no-owner", "--no-privileges", "--inserts", "--dbname", url],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    finally:
        pg.drop_database(url)
    POSTGRES_FIXTURE.write_text(_META.sub("", dump))
    check_dump_loads(len(scenario.runs))
    return scenario, int(row[0])


def check_dump_loads(at_least: int) -> None:
    """Load the written dump into a scratch database and open it with Keel."""
    url = pg.empty_database_url()
    try:
        load_dump(url, POSTGRES_FIXTURE)

        async def count() -> int:
            async with keel.Client(url) as client:
                return await client.count()

        runs = asyncio.run(count())
        if runs < at_least - 2:  # the chain's last run and the one-shot's do not exist yet
            raise SystemExit(f"make_fixtures: the loaded dump has {runs} runs")
    finally:
        pg.drop_database(url)


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--doomed", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.doomed:
        asyncio.run(doomed(args.doomed))
        return
    with tempfile.TemporaryDirectory(prefix="keel-compat-") as tmp:
        sqlite_dir, pg_dir = Path(tmp, "sqlite"), Path(tmp, "postgres")
        sqlite_dir.mkdir()
        pg_dir.mkdir()
        on_sqlite, sqlite_version = make_sqlite(sqlite_dir)
        on_postgres, pg_version = make_postgres(pg_dir)
    if (on_sqlite.runs, on_sqlite.signals) != (on_postgres.runs, on_postgres.signals):
        raise SystemExit("make_fixtures: the two backends recorded different scenarios")
    expected = {
        "made_by": {
            "commit": git("rev-parse", "HEAD"),
            "src_modified": bool(git("status", "--porcelain", "--", "src")),
            "keel": keel.__version__,
            "schema_version": {"sqlite": sqlite_version, "postgres": pg_version},
            "made_at": datetime.now(UTC).isoformat(timespec="seconds"),
        },
        "runs": on_sqlite.runs,
        "signals": on_sqlite.signals,
        "schedules": {
            "compat-once": {
                "workflow": "compat_sum",
                "at": ONCE_AT,
                "recorded_state": "active",
                "state": "done",
                "last_run_id": ONCE_RUN,
            },
            "compat-paused": {
                "workflow": "compat_sum",
                "cron": "0 9 * * MON-FRI",
                "timezone": "Europe/Paris",
                "input": {"values": [5]},
                "recorded_state": "paused",
                "state": "paused",
            },
            "compat-every-minute": {
                "workflow": "compat_sum",
                "cron": "* * * * *",
                "timezone": "UTC",
                "recorded_state": "active",
                "state": "active",
                "run_result": 2,
            },
        },
        "queue_limits": {app.QUEUE: 2},
        "queue": app.QUEUE,
    }
    EXPECTED.write_text(json.dumps(expected, indent=2) + "\n")
    for path in (SQLITE_FIXTURE, POSTGRES_FIXTURE, EXPECTED):
        print(f"{path.relative_to(REPO)}: {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
