"""Shared CLI plumbing: clean errors, the ``--db`` option, app imports, JSON arguments."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import importlib
import inspect
import json
import math
import os
import re
import sys
import traceback
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import click

from keel.client import Client
from keel.core import codec
from keel.core.inputs import check_input
from keel.core.redact import redact
from keel.errors import KeelError, SerializationError
from keel.store import SQLiteStore, Store, open_store
from keel.workflow.definitions import WorkflowDef

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
        click.secho(
            f"error: {redact(one_line(self.message))}", fg="red", err=True, color=self.show_color
        )


class CliUsageError(CliError):
    """A malformed invocation (bad JSON text, unknown module): exit code 2."""

    exit_code = 2


def one_line(message: str) -> str:
    """``message`` on one line: a refusal is exactly one ``error: ...`` line."""
    return " ".join(part.strip() for part in message.splitlines() if part.strip())


class KeelGroup(click.Group):
    """The ``keel`` group: the one place where failures become one line and an exit code.

    :class:`KeelError` and file-system errors exit 1, click's usage errors
    (bad options, values and arguments) exit 2, each as one ``error: ...``
    line; every argument is checked to be text before any command runs.
    """

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        with _one_line_errors():
            check_text_arguments(args)
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        with _one_line_errors():
            return super().invoke(ctx)


@contextlib.contextmanager
def _one_line_errors() -> Iterator[None]:
    try:
        yield
    except (CliError, click.exceptions.NoArgsIsHelpError):  # the latter prints the help
        raise
    except click.UsageError as exc:
        where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        raise CliUsageError(exc.format_message() + where) from None
    except KeelError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:  # a file the command was pointed at (export, replay paths)
        if exc.errno == errno.EPIPE:
            raise  # stdout closed early (`keel runs list | head`): click exits quietly
        raise CliError(describe_os_error(exc)) from None


def describe_os_error(exc: OSError) -> str:
    """``cannot use '<path>': <reason>``, or the error itself when it names no file."""
    if exc.filename is None:
        return f"{type(exc).__name__}: {exc}"
    return f"cannot use {str(exc.filename)!r}: {exc.strerror or exc}"


if TYPE_CHECKING:
    _FloatParam = click.ParamType[float, Any]  # generic in newer click only
else:
    _FloatParam = click.ParamType


class Seconds(_FloatParam):
    """A duration in seconds: a finite float, positive (or zero if ``zero_ok``).

    ``click.FloatRange`` lets ``nan`` (no comparison is true) and ``inf`` through,
    which then wait forever."""

    name = "seconds"

    def __init__(self, *, zero_ok: bool = False) -> None:
        self.zero_ok = zero_ok

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        low = "0 or more" if self.zero_ok else "more than 0"
        if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not self.zero_ok):
            self.fail(f"{value!r} is not a finite number of seconds {low}", param, ctx)
        return seconds


def check_text_arguments(args: list[str]) -> None:
    """Refuse arguments that are not text: bytes that are not UTF-8 reach Python as
    lone surrogates (PEP 383), which no database accepts in an id or a name."""
    for arg in args:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            raw = os.fsencode(arg)
            raise CliUsageError(
                f"argument {raw!r} is not valid UTF-8 text: give ids, names and JSON as UTF-8"
            ) from None


@dataclass
class Settings:
    """Options given before the command name (``keel --db URL --local runs list``)."""

    db: str | None = None
    local: bool = False  # show and read times in local time, not UTC


def check_db(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """``--db ""`` is a mistake (an unset variable?), not a request for the default."""
    if value is not None and not value.strip():
        raise click.BadParameter(
            f"the database URL is empty: give a URL or a .db path, or leave --db out "
            f"to use ${DB_ENV} or ./{DEFAULT_DB_FILE}",
            param_hint="--db",
        )
    return value


def db_option(fn: F) -> F:
    """The per-command ``--db URL`` option (overrides the global one)."""
    return click.option(
        "--db",
        "db",
        metavar="URL",
        default=None,
        callback=check_db,
        help=f"Database URL or .db path [default: ${DB_ENV}, else ./{DEFAULT_DB_FILE}].",
    )(fn)


def _set_local(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.ensure_object(Settings).local = True
    return value


def local_option(fn: F) -> F:
    """The ``--local`` flag: times in local time with their offset instead of UTC."""
    return click.option(
        "--local",
        is_flag=True,
        expose_value=False,
        callback=_set_local,
        help="Show times (and read times without a zone) in local time, not UTC.",
    )(fn)


def use_local_time() -> bool:
    """Whether this command shows local times (``--local``); UTC otherwise."""
    ctx = click.get_current_context(silent=True)
    settings = ctx.find_object(Settings) if ctx is not None else None
    return settings is not None and settings.local


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
    if DB_ENV in os.environ:
        env = os.environ[DB_ENV].strip()
        if not env:  # set but empty: a mistake, not a wish for ./keel.db
            raise CliUsageError(f"${DB_ENV} is set but empty: give it a database URL or unset it")
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
    if isinstance(store, SQLiteStore) and not _holds_data(store.path):
        raise CliError(f"no Keel database at {str(store.path)!r} (pass --db or set ${DB_ENV})")
    postgres = _as_postgres(store)
    if postgres is not None:
        postgres.auto_migrate = False
    return store


def _holds_data(path: Path) -> bool:
    """Whether a SQLite file exists and holds anything (an empty file would be
    turned into a Keel database by opening it). Only ``stat``: opening the file
    outside SQLite would drop this process's locks on it."""
    wal = path.with_name(path.name + "-wal")
    try:
        return path.stat().st_size > 0 or (wal.exists() and wal.stat().st_size > 0)
    except FileNotFoundError:
        return False


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
        if not all(part.isidentifier() for part in name.split(".")):
            raise CliUsageError(f"--app {name!r} is not a module name (like myapp.workflows)")
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


MAX_JSON_DEPTH = 100  # deeper values fail somewhere (encoders, rendering) as RecursionError


def parse_json(text: str, what: str) -> Any:
    """Decode one JSON command-line value; a clean usage error names ``what``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        hint = ""
        if text and text[0] not in '{["-0123456789' and text not in ("true", "false", "null"):
            hint = f" (a string must be quoted, e.g. '\"{text}\"')"
        raise CliUsageError(f"{what} is not valid JSON: {exc.msg}: {_cut(text)!r}{hint}") from None
    except RecursionError:
        raise CliUsageError(f"{what} is nested more than {MAX_JSON_DEPTH} levels deep") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise CliUsageError(f"{what} is not usable JSON: {exc}") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise CliUsageError(f"{what} is nested more than {MAX_JSON_DEPTH} levels deep")
    return value


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in ``value`` (iteratively: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, list | dict):
            deepest = max(deepest, depth)
            stack.extend(
                (v, depth + 1) for v in (item.values() if isinstance(item, dict) else item)
            )
    return deepest


def _cut(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_MAX_AGE = timedelta(days=365 * 1000)


def parse_time(text: str, option: str) -> datetime | timedelta:
    """An age back from now (``30m``, ``12h``, ``7d``, ``2w``) or an ISO 8601 time.

    A time without a zone is returned naive; :func:`aware` reads it as UTC, or
    as local time under ``--local``.
    """
    match = _AGE.fullmatch(text.strip())
    if match:
        seconds = float(match[1]) * _UNIT_SECONDS[match[2]]
        if 0 < seconds <= _MAX_AGE.total_seconds():
            return timedelta(seconds=seconds)
    else:
        try:
            return datetime.fromisoformat(text.strip())
        except ValueError:
            pass
    raise click.BadParameter(
        f"expected a positive age like 30m, 12h, 7d, 2w (at most 1000 years) "
        f"or an ISO 8601 time, not {_cut(text)!r}",
        param_hint=option,
    )


def parse_since(text: str) -> datetime | timedelta:
    """``--since``: see :func:`parse_time`."""
    return parse_time(text, "--since")


def aware(when: datetime | timedelta | None) -> datetime | timedelta | None:
    """A time filter as given, with a zone: a naive time is UTC (local under ``--local``)."""
    if not isinstance(when, datetime) or when.tzinfo is not None:
        return when
    if not use_local_time():
        return when.replace(tzinfo=UTC)
    try:
        return when.astimezone()
    except (ValueError, OverflowError):  # year 1 or 9999 shifted out of range
        raise CliUsageError(f"{when.isoformat()} is out of range in local time") from None


def time_option(name: str, help: str) -> Callable[[F], F]:
    """A ``--since``/``--until`` style filter taking an age or an ISO 8601 time."""
    option = f"--{name}"
    return click.option(
        option,
        metavar="AGE|TIME",
        callback=lambda _ctx, _param, value: None if value is None else parse_time(value, option),
        help=help,
    )


def since_option(fn: F) -> F:
    """The ``--since AGE|TIME`` filter (runs started at or after it)."""
    return time_option(
        "since",
        "Only runs started within AGE (30m, 12h, 7d, 2w) or since TIME (ISO 8601; "
        "UTC without a zone, local time with --local).",
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
