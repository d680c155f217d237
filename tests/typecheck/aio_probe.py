"""mypy probe: what ``await step.aio(...)`` is typed as (see test_typecheck.py).

Each ``reveal_type`` line ends in a comment naming the type mypy must reveal.
"""

from __future__ import annotations

from typing import reveal_type

import keel


@keel.step
async def fetch(n: int) -> int:
    return n


@keel.step
def render(n: int) -> str:
    return str(n)


@keel.step(retry=keel.RetryPolicy(max_attempts=2))
async def fetch_with_options(n: int) -> list[int]:
    return [n]


@keel.step(name="probe.render_with_options")
def render_with_options(n: int, *, sep: str = ",") -> bytes:
    return sep.join([str(n)]).encode()


@keel.workflow
async def probe(n: int) -> str:
    reveal_type(await fetch.aio(n))  # int
    reveal_type(await render.aio(n))  # str
    reveal_type(await fetch_with_options.aio(n))  # list[int]
    reveal_type(await render_with_options.aio(n, sep=";"))  # bytes
    reveal_type(await fetch.options(idempotency_key="k").aio(n))  # int
    return await render.aio(await fetch.aio(n))
