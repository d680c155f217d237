"""PostgreSQL: a repeat of a delivery id that commits while the first send holds
the run row is still delivered once (the unique index, not the snapshot, decides)."""

from __future__ import annotations

import asyncio

import psycopg

from keel.store.postgres import PostgresStore
from keel.store.postgres._sql import Q
from keel.testing.conformance import new_run
from tests.conformance.test_postgres import until_blocked_on_a_lock
from tests.pg import pg_url, postgres_server  # noqa: F401  (fixtures)


def test_a_repeat_blocked_behind_the_first_send_is_a_no_op(pg_url: str) -> None:  # noqa: F811
    async def main() -> None:
        store = PostgresStore(pg_url)
        await store.open()
        first = await psycopg.AsyncConnection.connect(pg_url, options="-csearch_path=keel")
        try:
            await store.runs.create(new_run("r1"))
            params = {
                "run_id": "r1",
                "name": "go",
                "payload": b"1",
                "delivery_id": "once",
                "channel": store.channel,
            }
            cur = await first.execute(Q["send_signal"], params)  # row locked, not committed
            row = await cur.fetchone()
            assert row is not None and row[2] is not None  # delivered
            repeat = asyncio.create_task(store.mailbox.send("r1", "go", b"2", delivery_id="once"))
            await until_blocked_on_a_lock(pg_url)  # its snapshot cannot see the first
            await first.commit()
            assert await asyncio.wait_for(repeat, 5) is None
            signal = await store.mailbox.next("r1", "go")
            assert signal is not None and signal.payload == b"1"
            async with store.db.pool.connection() as conn:
                cur = await conn.execute("SELECT count(*) FROM signals")
                assert await cur.fetchone() == (1,)
        finally:
            await first.close()
            await store.close()

    asyncio.run(main())
