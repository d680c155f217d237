"""PostgreSQL backend: one database shared by many workers on many machines.

Needs the ``postgres`` extra (psycopg 3 with its pool): ``pip install keel[postgres]``.
"""

from keel.store.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
