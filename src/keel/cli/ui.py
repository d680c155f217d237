"""``keel ui``: serve the dashboard (needs the ``ui`` extra)."""

from __future__ import annotations

import click

from keel.cli.common import CliError, db_option, open_existing, resolve_db
from keel.core.redact import redact

TOKEN_ENV = "KEEL_UI_TOKEN"


@click.command("ui")
@db_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option(
    "--token",
    envvar=TOKEN_ENV,
    metavar="TOKEN",
    default=None,
    help=(
        f"Operator token that allows actions (cancel, signal, pause, ...) after logging in "
        f"with it [default: ${TOKEN_ENV}; without one the dashboard is read-only]. Prefer "
        f"the variable: a command line is visible to other users of the machine."
    ),
)
def ui(db: str | None, host: str, port: int, token: str | None) -> None:
    """Serve the dashboard: runs, a run's timeline and journal, queues, schedules, workers.

    Server-rendered pages with live updates; read-only unless an operator token
    is given. To put it inside your own ASGI app, mount keel.ui.create_app(...).
    """
    try:
        import uvicorn

        from keel.ui import create_app
    except ImportError as exc:
        raise CliError(
            f"the dashboard needs the ui extra: pip install 'keel[ui]' ({exc.name} is missing)"
        ) from None
    if token is not None and not token.strip():
        raise CliError(f"the operator token is empty (--token or ${TOKEN_ENV})")
    url = resolve_db(db)
    store = open_existing(url)
    app = create_app(store, token=token, close_store=True)
    access = "actions need the operator token" if token else "read-only"
    click.echo(f"Keel dashboard for {redact(url)} on http://{host}:{port}/ ({access})", err=True)
    # The app opens the store on startup and closes it on shutdown.
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2)
