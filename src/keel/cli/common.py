"""Shared CLI plumbing: clean errors, the ``--db`` option, app imports, JSON arguments."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import os
import re
import sys
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import IO, TYPE_CHECKING, Any, TypeVar

import click

from keel.client import Client
from keel.core import codec
from keel.core.inputs import check_input
from keel.core.redact import redact
from keel.definitions import WorkflowDef
from keel.errors import KeelError, SerializationError
from keel.store import SQLiteStore, Store, open_store

if TYPE_CHECKING:
    from keel.store.postgres import PostgresStore

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

DB_ENV = "KEEL_DATABASE_URL"
DEFAULT_DB_FILE = "keel.db"


class CliError(click.ClickException):
    """A user-facing failure: one red ``error: ...`` line on stderr, exit code 1."""

    exit_code = 1

    def show(self, file: IO[Any] | None = None) -> None:
        # Masked here, the one place errors are printed: a message may quote a URL.
        click.secho(f"error: {redact(self.message)}", fg="red", err=True, color=self.show_color)


class CliUsageError(CliError):
    """A malformed invocation (bad JSON text, unknown module): exit code 2."""

    exit_code = 2


class KeelGroup(click.Group):
    """A click group that turns every :class:`KeelError` into a clean :class:`CliError`."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeelError as exc:
            raise CliError(str(exc)) from None


@dataclass
class Settings:
    """Options given before the command name (``keel --db URL runs list``)."""

    db: str | None = None


def db_option(fn: F) -> F:
    """The per-command ``--db URL`` option (overrides the global one)."""
    return click.option(
        "--db",
        "db",
        metavar="URL",
        default=None,
        help=f"Database URL or .db path [default: ${DB_ENV}, else ./{DEFAULT_DB_FILE}].",
    )(fn)


def workflow_call(fn: F) -> F:
    """``WORKFLOW [ARG_JSON]... --app MODULE... [--kwarg NAME=JSON]...``: a workflow and
    its arguments, as ``keel start`` and ``keel schedules create`` take them."""
    fn = click.option(
        "--kwarg",
        "kwargs",
        multiple=True,
        metavar="NAME=JSON",
        help="A keyword argument as JSON (repeatable).",
    )(fn)
    fn = click.option(
        "--app",
        "apps",
        multiple=True,
        required=True,
        metavar="MODULE",
        help="Module defining the workflow (repeatable).",
    )(fn)
    fn = click.argument("args", nargs=-1, metavar="[ARG_JSON]...")(fn)
    return click.argument("workflow")(fn)


def json_option(fn: F) -> F:
    """The ``--json`` flag of read commands."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print machine-readable JSON only."
    )(fn)


def resolve_db(db: str | None, *, fallback: str | None = None) -> str:
    """The database URL: command option, global option, then ``fallback`` or env/default."""
    if db:
        return db
    ctx = click.get_current_context(silent=True)
    settings = ctx.find_object(Settings) if ctx is not None else None
    if settings is not None and settings.db:
        return settings.db
    if fallback is not None:
        return fallback
    env = os.environ.get(DB_ENV, "").strip()
    if env:
        return env
    # Absolute, so the URL means the same file whatever the working directory.
    return f"sqlite:///{os.path.abspath(DEFAULT_DB_FILE)}"


def open_existing(url: str) -> Store:
    """The store for ``url``, refusing to create a database (reads never do).

    A SQLite file must exist; a PostgreSQL database must hold Keel's schema,
    which is checked but never created or migrated (it may be the application's
    own database): see :class:`~keel.errors.SchemaMissingError`.
    """
    store = open_store(url)
    if isinstance(store, SQLiteStore) and not store.path.exists():
        raise CliError(f"no Keel database at {str(store.path)!r} (pass --db or set ${DB_ENV})")
    postgres = _as_postgres(store)
    if postgres is not None:
        postgres.auto_migrate = False
    return store


def _as_postgres(store: Store) -> PostgresStore | None:
    try:  # psycopg is optional: without it, no store is a PostgresStore
        from keel.store.postgres import PostgresStore
    except ImportError:
        return None
    return store if isinstance(store, PostgresStore) else None


def with_client(url: str, action: Callable[[Client], Awaitable[T]], *, existing: bool = True) -> T:
    """Run ``action`` with a client on ``url`` in a fresh event loop, then close the store."""

    async def go() -> T:
        store = open_existing(url) if existing else open_store(url)
        async with Client(store) as client:
            return await action(client)

    return asyncio.run(go())


def import_apps(modules: tuple[str, ...] | list[str]) -> None:
    """Import app modules so their ``@workflow`` decorators register (cwd first on the path)."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if missing and (name == missing or name.startswith(missing + ".")):
                raise CliUsageError(
                    f"cannot import module {name!r}: no module named {missing!r}"
                ) from None
            raise CliError(f"importing module {name!r} failed: {exc}") from None
        except (ImportError, KeelError) as exc:
            raise CliError(f"importing module {name!r} failed: {exc}") from None
        except Exception as exc:
            # A bug in the module's own code: show its frames (not ours), then one line.
            click.echo(_user_traceback(exc), err=True, nl=False)
            raise CliError(
                f"importing module {name!r} failed: {type(exc).__name__}: {exc}"
            ) from None


def _user_traceback(exc: BaseException) -> str:
    """``exc``'s traceback without the import machinery frames above the user's code."""
    tb = exc.__traceback__
    while tb is not None and (
        tb.tb_frame.f_code.co_filename.startswith("<frozen")
        or tb.tb_frame.f_globals.get("__name__") in (__name__, "importlib")
    ):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def parse_json(text: str, what: str) -> Any:
    """Decode one JSON command-line value; a clean usage error names ``what``."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        hint = ""
        if text and text[0] not in '{["-0123456789' and text not in ("true", "false", "null"):
            hint = f" (a string must be quoted, e.g. '\"{text}\"')"
        raise CliUsageError(f"{what} is not valid JSON: {exc.msg}: {text!r}{hint}") from None


_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str) -> datetime | timedelta:
    """``--since``: an age back from now (``30m``, ``12h``, ``7d``, ``2w``) or an ISO 8601 time.

    A time without a zone is local time, as a person typing it means it.
    """
    match = _AGE.fullmatch(text.strip())
    if match:
        age = timedelta(seconds=float(match[1]) * _UNIT_SECONDS[match[2]])
        if age > timedelta(0):
            return age
    else:
        try:
            when = datetime.fromisoformat(text.strip())
        except ValueError:
            pass
        else:
            return when if when.tzinfo is not None else when.astimezone()
    raise click.BadParameter(
        f"expected a positive age like 30m, 12h, 7d, 2w or an ISO 8601 time, not {text!r}",
        param_hint="--since",
    )


def since_option(fn: F) -> F:
    """The ``--since AGE|TIME`` filter (runs started at or after it)."""
    return click.option(
        "--since",
        metavar="AGE|TIME",
        callback=lambda _ctx, _param, value: None if value is None else parse_since(value),
        help="Only runs started within AGE (30m, 12h, 7d, 2w) or since TIME (ISO 8601).",
    )(fn)


def checked_arguments(
    wf: WorkflowDef[Any, Any], args: tuple[str, ...], kwargs: tuple[str, ...]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Parse JSON arguments and check them against the workflow's annotations.

    Encoding and decoding them exactly as a worker will means a bad shape fails
    here, before anything is written.
    """
    names = [
        p.name
        for p in inspect.signature(wf.fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    values = [
        parse_json(text, f"argument {i + 1}" + (f" ({names[i]!r})" if i < len(names) else ""))
        for i, text in enumerate(args)
    ]
    named: dict[str, Any] = {}
    for item in kwargs:
        name, sep, text = item.partition("=")
        if not sep or not name.isidentifier():
            raise CliUsageError(f"--kwarg must look like NAME=JSON, not {item!r}")
        if name in named:
            raise CliUsageError(f"--kwarg {name} given twice")
        named[name] = parse_json(text, f"--kwarg {name}")
    what = f"workflow {wf.name!r}"
    try:
        data = codec.encode_args(wf.fn, tuple(values), named, what=what)
        check_input(wf.codec, data, wf.name)  # the client's check: InvalidInputError
        return codec.decode_args(wf.fn, data, what=what)
    except SerializationError:
        raise
    except TypeError as exc:
        raise CliError(f"bad arguments for {what}: {exc}") from None
