"""The ``keel`` command: run workers, start and control runs, inspect them, run the demo."""

from __future__ import annotations

import asyncio
import logging
import sys
from datetime import timedelta
from typing import Any

import click

from keel.cli import render
from keel.cli.common import (
    DB_ENV,
    CliError,
    KeelGroup,
    Seconds,
    Settings,
    check_db,
    checked_arguments,
    db_option,
    import_apps,
    json_option,
    parse_json,
    parse_time,
    resolve_db,
    with_client,
    workflow_call,
)
from keel.cli.db import db
from keel.cli.graphs import approve, graph, reject
from keel.cli.health import health
from keel.cli.operate import COMMANDS as OPERATOR_COMMANDS
from keel.cli.queues import queues
from keel.cli.replay import replay
from keel.cli.runs import runs
from keel.cli.schedules import schedules
from keel.cli.ui import ui
from keel.cli.versions import versions
from keel.client import Client
from keel.core import codec
from keel.core.facts import FACT_THRESHOLD
from keel.core.states import RunState
from keel.errors import KeelError, RunFinishedError
from keel.workflow.registry import default_registry


@click.group(cls=KeelGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--db",
    metavar="URL",
    default=None,
    callback=check_db,
    help=f"Database URL for every command [default: ${DB_ENV}, else ./keel.db].",
)
@click.option(
    "--local",
    is_flag=True,
    help="Times in local time with their offset, for every command [default: UTC].",
)
@click.version_option(package_name="keel", prog_name="keel")
@click.pass_context
def cli(ctx: click.Context, db: str | None, local: bool) -> None:
    """Keel: durable workflows for Python.

    Database URLs: a path ending .db, sqlite:///rel/path.db, sqlite:////abs/path.db,
    postgresql://user@host/db, or memory://.

    Times are shown in UTC (2026-12-03 08:41:07Z) and a time typed without a
    zone is read as UTC; --local (here or on a command) uses local time.
    """
    ctx.obj = Settings(db=db, local=local)


for command in OPERATOR_COMMANDS:
    runs.add_command(command)
cli.add_command(runs)
cli.add_command(schedules)
cli.add_command(db)
cli.add_command(queues)
cli.add_command(replay)
cli.add_command(versions)
cli.add_command(health)
cli.add_command(ui)
cli.add_command(graph)
cli.add_command(approve)
cli.add_command(reject)


# --- worker ----------------------------------------------------------------------------


@cli.command()
@click.argument("modules", nargs=-1, required=True, metavar="MODULE...")
@db_option
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Runs driven at once.",
)
@click.option(
    "--lease-ttl",
    type=Seconds(),
    default=30.0,
    show_default=True,
    help="Seconds a claimed run stays leased without a heartbeat.",
)
@click.option(
    "--poll-interval",
    type=Seconds(),
    default=0.5,
    show_default=True,
    help="Seconds between looks for due runs.",
)
@click.option(
    "--no-cache",
    is_flag=True,
    help="Replay every turn from the store instead of keeping runs in memory.",
)
@click.option(
    "--drain-timeout",
    type=Seconds(zero_ok=True),
    default=30.0,
    show_default=True,
    help="On SIGTERM/SIGINT, seconds running steps get to finish.",
)
@click.option(
    "--queue",
    "queues",
    multiple=True,
    metavar="NAME[=LIMIT]",
    help="Run dispatched steps of queue NAME, at most LIMIT at once "
    "[default LIMIT: --task-concurrency] (repeatable).",
)
@click.option(
    "--task-concurrency",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Dispatched-step attempts run at once, over all --queue queues.",
)
@click.option(
    "--no-schedules",
    is_flag=True,
    help="Do not fire schedules (by default every worker fires those of its workflows).",
)
@click.option(
    "--retain",
    metavar="AGE",
    callback=lambda _ctx, _param, value: None if value is None else _age(value, "--retain"),
    help="Delete runs that ended more than AGE ago (30d, 12h), with their journals, "
    "every 10 minutes [default: keep every run].",
)
@click.option(
    "--fact-threshold",
    type=click.IntRange(min=0),
    default=FACT_THRESHOLD,
    show_default=True,
    metavar="BYTES",
    help="Store step results larger than this once, by content digest, and keep only "
    "the digest in the journal (0: keep every result in the journal; at least 1024 otherwise).",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    show_default=True,
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"], case_sensitive=False),
    default="text",
    show_default=True,
    help="json: one JSON object per line, with run_id, workflow, step and attempt fields.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    default=None,
    help="Serve /metrics (Prometheus), /healthz and /readyz on this port "
    "(needs the metrics extra: pip install 'keel[metrics]').",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="Address the --metrics-port endpoints listen on. They have no authentication: "
    "give 0.0.0.0 (every interface) only on a network you trust, or behind a proxy.",
)
def worker(
    modules: tuple[str, ...],
    db: str | None,
    concurrency: int,
    lease_ttl: float,
    poll_interval: float,
    no_cache: bool,
    drain_timeout: float,
    queues: tuple[str, ...],
    task_concurrency: int,
    no_schedules: bool,
    retain: float | None,
    fact_threshold: int,
    log_level: str,
    log_format: str,
    metrics_port: int | None,
    metrics_host: str,
) -> None:
    """Import MODULEs (registering their workflows) and execute runs until stopped.

    With --queue the worker also runs dispatched steps (@keel.step(queue=...))
    of those queues: `--queue gpu=2 --queue default`.

    SIGTERM or SIGINT drains: claiming stops, running steps get --drain-timeout
    seconds to finish, leases are released, and the exit code is 0.
    """
    limits = _queue_limits(queues, task_concurrency)
    if 0 < fact_threshold < 1024:
        raise click.BadParameter("give 0 (off) or at least 1024", param_hint="--fact-threshold")
    from keel.cli.serve import WorkerOptions, serve

    if metrics_port is not None:  # before anything counts: the instruments delegate to it
        from keel.observe.endpoints import install_meter_provider

        try:
            install_meter_provider()
        except KeelError as exc:
            raise CliError(str(exc)) from None
    _configure_logging(log_level, log_format)
    import_apps(modules)
    opts = WorkerOptions(
        url=resolve_db(db),
        modules=modules,
        concurrency=concurrency,
        lease_ttl=lease_ttl,
        poll_interval=poll_interval,
        cache=not no_cache,
        drain_timeout=drain_timeout,
        queues=limits,
        task_concurrency=task_concurrency,
        schedules=not no_schedules,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        retain=retain,
        fact_threshold=fact_threshold or None,
    )
    asyncio.run(serve(opts))


def _configure_logging(level: str, fmt: str) -> None:
    """Log to stderr at ``level``, as text lines or (``json``) one JSON object a line."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt.lower() == "json":
        from keel.observe.logs import JsonFormatter

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler])


def _age(text: str, option: str) -> float:
    """An age option (``30d``) in seconds."""
    when = parse_time(text, option)
    if not isinstance(when, timedelta):
        raise click.BadParameter("give an age like 30d, not a time", param_hint=option)
    return when.total_seconds()


def _queue_limits(specs: tuple[str, ...], default: int) -> dict[str, int]:
    """Parse ``--queue NAME[=LIMIT]`` options into queue name -> limit."""
    limits: dict[str, int] = {}
    for spec in specs:
        name, sep, text = spec.partition("=")
        if not name or "#" in name:
            raise click.BadParameter(
                f"{spec!r}: the queue name must be non-empty and without '#'",
                param_hint="--queue",
            )
        limit = default
        if sep:
            try:
                limit = int(text)
            except ValueError:
                limit = 0
            if limit < 1:
                raise click.BadParameter(
                    f"{spec!r}: LIMIT must be a positive integer", param_hint="--queue"
                )
        if name in limits:
            raise click.BadParameter(f"queue {name!r} is given twice", param_hint="--queue")
        limits[name] = limit
    return limits


# --- start / signal / cancel -----------------------------------------------------------


@cli.command()
@workflow_call
@click.option("--run-id", metavar="ID", help="Idempotency key: reuse the run if it exists.")
@click.option("--wait", is_flag=True, help="Wait for the result (a worker must be running).")
@click.option(
    "--timeout",
    type=Seconds(),
    help="With --wait: give up after this many seconds.",
)
@db_option
@json_option
def start(
    workflow: str,
    args: tuple[str, ...],
    apps: tuple[str, ...],
    kwargs: tuple[str, ...],
    run_id: str | None,
    wait: bool,
    timeout: float | None,
    db: str | None,
    as_json: bool,
) -> None:
    """Start a run of WORKFLOW; each ARG_JSON is one positional argument.

    Prints the run id on stdout (so RUN=$(keel start ...) works); with --wait,
    then the result as JSON. The id comes first, so a failed run, --timeout or
    Ctrl-C still tells which run it was; with --json, one document whose first
    field is run_id, then result or error.
    """
    if timeout is not None and not wait:
        raise click.UsageError("--timeout only applies with --wait")
    import_apps(apps)
    wf = default_registry.get(workflow)
    call_args, call_kwargs = checked_arguments(wf, args, kwargs)

    started: dict[str, Any] = {}

    async def go(client: Client) -> Any:
        handle = await client.start(wf, *call_args, run_id=run_id, **call_kwargs)
        started.update(run_id=handle.run_id, workflow=wf.name, created=handle.created)
        if not as_json:
            # The id first, so a failure, a timeout or Ctrl-C while waiting still says
            # which run it was (the run goes on without us).
            click.echo(handle.run_id)
            if not handle.created:
                click.secho(
                    f"run {handle.run_id} already existed: nothing new was started",
                    err=True,
                    fg="yellow",
                )
        return await client.result(handle.run_id, timeout=timeout) if wait else None

    try:
        result = with_client(resolve_db(db), go, existing=False)
    except (KeelError, KeyboardInterrupt) as exc:
        if not started:
            raise
        message = (
            f"stopped waiting for run {started['run_id']}: it goes on "
            f"(keel runs show {started['run_id']})"
            if isinstance(exc, KeyboardInterrupt)
            else str(exc)
        )
        if as_json:  # one document, the run id first, then what happened
            render.print_json({**started, "error": message})
        if isinstance(exc, KeyboardInterrupt):
            click.secho(f"error: {message}", fg="red", err=True)
            sys.exit(130)  # as for any command stopped by SIGINT
        raise CliError(message) from None
    if as_json:
        doc: dict[str, Any] = dict(started)
        if wait:
            doc["result"] = _plain(result)
        render.print_json(doc)
    elif wait:
        render.print_json(_plain(result))


def _plain(value: Any) -> Any:
    """A workflow result as plain JSON values, encoded the way Keel stores it."""
    return codec.decode(codec.encode(value, what="the result"))


@cli.command()
@click.argument("run_id")
@click.argument("name")
@click.argument("payload", required=False, metavar="[PAYLOAD_JSON]")
@click.option(
    "--id",
    "delivery_id",
    metavar="ID",
    help="Delivery id: sending again with the same ID is a no-op (safe to retry).",
)
@db_option
def signal(
    run_id: str, name: str, payload: str | None, delivery_id: str | None, db: str | None
) -> None:
    """Send signal NAME (with an optional JSON payload) to a run."""
    value = None if payload is None else parse_json(payload, "PAYLOAD_JSON")

    async def go(client: Client) -> bool:
        return await client.signal(run_id, name, value, delivery_id=delivery_id)

    if with_client(resolve_db(db), go):
        click.echo(f"sent signal {name!r} to run {run_id}")
    else:
        click.echo(f"signal {name!r} with id {delivery_id!r} was sent to run {run_id} before")


@cli.command()
@click.argument("run_id")
@db_option
def cancel(run_id: str, db: str | None) -> None:
    """Cancel a run (a worker delivers the request; its cleanup runs, then it ends).

    Idempotent: a run that is already cancelled is reported, with exit code 0.
    """

    async def go(client: Client) -> RunState | None:
        try:
            return await client.cancel(run_id)
        except RunFinishedError as exc:
            if exc.state != RunState.CANCELLED:
                raise
            return None  # already cancelled: the outcome asked for holds

    state = with_client(resolve_db(db), go)
    if state is None:
        click.echo(f"run {run_id} was already cancelled: nothing to do")
    elif state is RunState.CANCELLED:
        click.echo(f"run {run_id} cancelled")
    else:
        click.echo(
            f"cancel requested: run {run_id} is {state}; a worker ends it once its cleanup has run"
        )


# --- demo ---------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--db", metavar="PATH", default=None, help="Database for the demo [default: ./keel-demo.db]."
)
@click.option("--fast", is_flag=True, help="Shorter waits (about 2 s instead of 4 s).")
def demo(db: str | None, fast: bool) -> None:
    """Run an example order workflow in-process and watch it live.

    Shows steps, a flaky step's retries, a durable sleep that suspends the run,
    and a signal, then the run's journal as `keel runs history` prints it.
    """
    from keel.cli.demo import run_demo

    url = resolve_db(db, fallback="keel-demo.db")
    asyncio.run(run_demo(url, url, fast=fast, console=render.make_console()))


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``keel`` script."""
    cli.main(args=argv, prog_name="keel")


__all__ = ["CliError", "cli", "main"]
