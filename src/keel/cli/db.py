"""``keel db migrate``: apply or print schema migrations."""

from __future__ import annotations

import asyncio

import click

from keel.cli.common import CliError, db_option, resolve_db
from keel.store import open_store
from keel.store.sqlite import SQLiteStore
from keel.store.sqlite import _sql as sqlite_sql


@click.group("db")
def db() -> None:
    """Manage the database schema."""


@db.command("migrate")
@click.option(
    "--print",
    "print_only",
    is_flag=True,
    help="Print the SQL of the pending migrations instead of applying them (for a DBA).",
)
@click.option(
    "--all", "all_", is_flag=True, help="With --print: every migration, not only pending."
)
@db_option
def migrate(print_only: bool, all_: bool, db: str | None) -> None:
    """Apply pending migrations (a worker also applies them when it starts)."""
    url = resolve_db(db)
    if url.startswith(("postgresql://", "postgres://")):
        click.echo(asyncio.run(_postgres(url, print_only, all_)), nl=False)
        return
    store = open_store(url)
    if not isinstance(store, SQLiteStore):
        raise CliError(f"{url!r} has no schema to migrate")
    if print_only:
        click.echo(_sqlite_script(), nl=False)
        return

    async def apply() -> None:  # opening a SQLite store applies its migrations
        await store.open()
        await store.close()

    asyncio.run(apply())
    click.echo(f"{store.path}: schema at version {sqlite_sql.latest_version()}")


async def _postgres(url: str, print_only: bool, all_: bool) -> str:
    from keel.store.postgres import PostgresStore

    store = PostgresStore(url, auto_migrate=False)
    if print_only:
        return await store.migration_sql(pending_only=not all_)
    applied = await store.migrate()
    if not applied:
        return "schema is up to date\n"
    return "applied migration(s) " + ", ".join(str(v) for v in applied) + "\n"


def _sqlite_script() -> str:
    parts = [
        f"-- migration {number:04d}\n{script.strip()}\n"
        for number, script in sqlite_sql.migrations()
    ]
    return "\n".join(parts)
