"""Version 2 of ``acc.versioned``: the first step is now c instead of a
(same workflow name, same declared version; see versioned_v1)."""

from __future__ import annotations

import keel
from tests.acceptance.apps._record import record


@keel.step(name="acc.v.c")
def c() -> str:
    record()
    return "c"


@keel.step(name="acc.v.b")
def b(prev: str) -> str:
    record()
    return prev + "b"


@keel.workflow(name="acc.versioned", version="1")
async def versioned() -> str:
    first = await c()
    go = await keel.wait_for_signal("go")
    return str(await b(f"{first}{go}"))
