"""The SQL files that ship beside a backend: named queries, migrations, schema.

Each backend keeps its own SQL (DESIGN.md); this is only how those files are
found and split, shared so both backends read them the same way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cached_property
from importlib import resources

from keel.errors import DatabaseError

#: The ``keel_meta`` row that marks a database (or schema) as Keel's.
MARKER_KEY = "application"
MARKER_VALUE = "keel"

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
_MIGRATION = re.compile(r"^(\d{4})_\w+\.sql$")


def parse_named(text: str, *, strip_semicolon: bool = False) -> dict[str, str]:
    """Split a file of ``-- name: foo`` sections into ``{"foo": sql}``."""
    parts = _NAME.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"duplicate query name {name!r}")
        sql = body.strip()
        queries[name] = sql.removesuffix(";") if strip_semicolon else sql
    return queries


class SqlFiles:
    """``queries.sql``, ``schema.sql`` and ``migrations/NNNN_*.sql`` of one package."""

    def __init__(self, package: str, label: str, *, strip_semicolon: bool = False) -> None:
        self._package = package
        self._label = label
        self._strip = strip_semicolon

    def read(self, name: str) -> str:
        return resources.files(self._package).joinpath(name).read_text(encoding="utf-8")

    @cached_property
    def queries(self) -> dict[str, str]:
        """The named queries of ``queries.sql``."""
        return parse_named(self.read("queries.sql"), strip_semicolon=self._strip)

    @cached_property
    def migrations(self) -> tuple[tuple[int, str], ...]:
        """``(version, script)`` of every file in ``migrations/``, in version order."""
        folder = resources.files(self._package).joinpath("migrations")
        found: list[tuple[int, str]] = []
        for entry in folder.iterdir():
            m = _MIGRATION.match(entry.name)
            if m:
                found.append((int(m.group(1)), entry.read_text(encoding="utf-8")))
        found.sort()
        versions = [v for v, _ in found]
        # Unique and ascending from 1. A gap is tolerated so that work done in
        # parallel can reserve its number (0005 may be written before 0004 lands).
        if len(set(versions)) != len(versions) or (versions and versions[0] != 1):
            raise RuntimeError(
                f"Keel {self._label} migrations must be numbered uniquely from 1: {versions}"
            )
        return tuple(found)

    def latest_version(self) -> int:
        """The schema version this code creates and understands: the highest migration."""
        return self.migrations[-1][0] if self.migrations else 0

    def checked_version(self, meta: Mapping[str, str], where: str, noun: str) -> int:
        """The schema version recorded in ``meta``, the ``keel_meta`` rows of ``where``
        (a Keel ``noun``: "database", "schema"); ``DatabaseError`` if they lack the
        Keel marker or hold a malformed version, or one newer than this Keel knows."""
        if meta.get(MARKER_KEY) != MARKER_VALUE:
            raise DatabaseError(f"{where} is not a Keel {noun} (keel_meta has no Keel marker)")
        try:
            version = int(meta.get("schema_version", "0"))
        except ValueError:
            raise DatabaseError(
                f"{where} has a malformed schema_version {meta['schema_version']!r}"
            ) from None
        if version > self.latest_version():
            raise DatabaseError(
                f"{where} has Keel schema version {version}, but this Keel knows versions "
                f"up to {self.latest_version()}; upgrade Keel to use it"
            )
        return version

    def schema_script(self) -> str:
        """The full current schema (``schema.sql``), for reference and tests."""
        return self.read("schema.sql")
